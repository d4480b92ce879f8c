"""The Snapshots and Backups tabs of an instance in headless Chromium: take a snapshot (a bad
name is refused in the page), see the tree, delete it; back up now and see the backup."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from tests.integration.conftest import Daemon

from .conftest import ADMIN_PASSWORD, Shots
from .test_ui import OP_MS, login

pytestmark = pytest.mark.integration


def test_snapshot_and_backup_tabs(ui_daemon: Daemon, page: Page, shots: Shots) -> None:
    d = ui_daemon
    d.create("prot-1", start=True)
    d.wait_marker("prot-1")
    login(page, d.url, "admin", ADMIN_PASSWORD)
    page.goto(f"{d.url}/#/instances/prot-1/snapshots")
    expect(page.locator(".tabpanel")).to_contain_text("No snapshots yet.")
    page.get_by_label("Snapshot name").fill("Bad/Name")
    page.get_by_role("button", name="Take snapshot").click()
    expect(page.locator(".tabpanel [role=alert]")).to_contain_text("lowercase")
    page.get_by_label("Snapshot name").fill("before-upgrade")
    page.get_by_role("button", name="Take snapshot").click()
    row = page.locator("tr[data-snapshot=before-upgrade]")
    expect(row).to_contain_text("current", timeout=OP_MS)
    shots.step("snapshot-taken")
    row.get_by_role("button", name="Delete").click()
    page.locator("dialog").get_by_role("button", name="Delete").click()
    expect(page.locator(".tabpanel")).to_contain_text("No snapshots yet.", timeout=OP_MS)

    page.get_by_role("tab", name="Backups").click()
    expect(page.locator(".tabpanel")).to_contain_text("No backups yet.")
    page.get_by_role("button", name="Back up now").click()
    expect(page.locator("table.backups tbody tr")).to_have_count(1, timeout=OP_MS)
    expect(page.locator("table.backups")).to_contain_text("full (first backup")
    shots.step("backup-listed")
    assert not [m for m in shots.console if m.startswith("pageerror")], shots.console
