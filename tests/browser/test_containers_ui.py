"""The web UI with a real system container: its page shows the Container mode, the
Container tab runs a command, changes limits live and takes (and deletes) a rootfs
snapshot, and the serial console is the container's init shell."""

from __future__ import annotations

import contextlib
import re

import pytest
from playwright.sync_api import Page, expect

from tests.integration.conftest import Daemon
from virtfleet.app.settings import Settings
from virtfleet.client import container_calls
from virtfleet.drivers.oci.driver import cgroup_mounts
from virtfleet.util.cgroups import detect_layout

from .conftest import ADMIN_PASSWORD, Shots
from .test_ui import OP_MS, act, login, power, wait_terminal

pytestmark = pytest.mark.integration


def test_container_page_exec_limits_console_snapshot(
    ui_daemon: Daemon, page: Page, shots: Shots
) -> None:
    """Container tab: exec shows output, limits apply live, snapshot of the stopped rootfs."""
    d = ui_daemon
    try:
        _scenario(d, page, shots)
    finally:
        op = d.client.delete_instance("ct-1", force=True, disks=True)  # containers outlive d
        d.client.wait_operation(op.id, timeout_s=120)
        parent = f"virtfleet-{Settings(data_dir=d.data_dir).instance_id}"
        for mount in cgroup_mounts():  # the runtime made this parent in every hierarchy
            with contextlib.suppress(OSError):
                (mount / parent).rmdir()


def _scenario(d: Daemon, page: Page, shots: Shots) -> None:
    op = d.client.build_image("ctiny", builder="container-tiny")
    assert d.client.wait_operation(op.id, timeout_s=300).status == "success"
    spec = {"name": "ct-1", "kind": "container", "image": "ctiny", "memory_mib": 128}
    op = d.client.create_instance(spec, start=True)
    assert d.client.wait_operation(op.id, timeout_s=120).status == "success"
    login(page, d.url, "admin", ADMIN_PASSWORD)
    page.goto(d.url + "/#/instances/ct-1/container")
    power(page, "running")
    expect(page.locator(".instance-head [data-mode]")).to_have_text("Container")
    page.get_by_label("Command").fill("hostname")
    page.get_by_role("button", name="Run").click()
    expect(page.locator("pre.exec-output")).to_contain_text("ct-1")
    expect(page.locator("pre.exec-output")).to_contain_text("[exit 0]")
    page.get_by_label("Memory (MiB)").fill("96")
    page.get_by_role("button", name="Apply").click()
    expect(page.locator("form.limits")).to_contain_text("Limits applied.")
    memcg = detect_layout().v1["memory"] / f"virtfleet-{Settings(data_dir=d.data_dir).instance_id}"
    assert (memcg / "ct-1" / "memory.limit_in_bytes").read_text().strip() == str(96 * 2**20)
    shots.step("container-tab")

    page.get_by_role("tab", name="Console").click()
    expect(page.locator("#console-vnc")).to_be_hidden()
    page.locator(".serial-screen").click()
    for _ in range(10):  # the init's shell drops what was typed before it started
        page.keyboard.type("\n")
        page.wait_for_timeout(300)
    page.keyboard.type("echo ct-$((6*7))\n")
    wait_terminal(page, r"ct-42", 30_000)
    shots.step("container-console")

    page.get_by_role("tab", name="Summary").click()
    act(page, "Stop")
    power(page, "stopped", timeout=OP_MS)
    page.get_by_role("tab", name="Container").click()
    page.get_by_label("Name").fill("s1")
    page.get_by_role("button", name="Take snapshot").click()
    expect(page.locator(".snapshots li")).to_contain_text(re.compile("s1"))
    shots.step("container-snapshot")
    page.get_by_role("button", name="Delete snapshot s1").click()
    page.locator("#dialog").get_by_role("button", name="Delete").click()
    expect(page.locator(".snapshots")).to_contain_text("No snapshots yet.")
    assert d.client.call(container_calls.list_snapshots("ct-1")) == []
    assert not [m for m in shots.console if m.startswith("pageerror")], shots.console
