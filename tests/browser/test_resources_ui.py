"""The Hardware tab changes a running VM's resources in a real browser against a real guest."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from tests.integration.conftest import Daemon

from .conftest import ADMIN_PASSWORD, Shots
from .test_ui import OP_MS, login

pytestmark = pytest.mark.integration


def test_hardware_tab_changes_memory_and_vcpus_live(
    ui_daemon: Daemon, page: Page, shots: Shots
) -> None:
    """An admin lowers memory and adds a vCPU in the Hardware tab: both are reported as
    applied live, the page shows the new live values, and nothing is left pending."""
    d = ui_daemon
    d.create("hw", vcpus=1, max_vcpus=2, memory_mib=384, max_memory_mib=512)
    d.wait_marker("hw")
    login(page, d.url, "admin", ADMIN_PASSWORD)
    page.goto(f"{d.url}/#/instances/hw/hardware")
    form = page.locator("#resources-form")
    form.get_by_label("Memory (MiB)").fill("256")
    form.get_by_label("vCPUs", exact=True).fill("2")
    shots.step("hardware-form")
    form.get_by_role("button", name="Apply").click()
    status = page.locator("#resources-status")
    expect(status).to_contain_text("memory_mib: applied live", timeout=OP_MS)
    expect(status).to_contain_text("vcpus: applied live")
    expect(page.locator(".facts")).to_contain_text("live 2")
    expect(page.locator(".facts")).to_contain_text("live 256 MiB")
    expect(page.locator("#pending-changes")).to_have_count(0)
    shots.step("hardware-applied")
    applied = d.client.get_instance("hw").status.applied
    assert applied is not None and (applied.vcpus, applied.memory_mib) == (2, 256)
