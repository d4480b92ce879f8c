"""The web UI in headless Chromium against a real daemon booting the real ``tiny`` guest.

One scenario per test: an admin's whole VM lifecycle through the UI (wizard, start,
serial console, pause/resume, stop, delete), the graphical console, and a viewer who
sees no mutating controls and whose forged change is refused.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.integration.conftest import ROOT, Daemon

from .conftest import ADMIN_PASSWORD, Shots

pytestmark = pytest.mark.integration

BOOT_MS = 120_000
OP_MS = 90_000
# Set to a path (e.g. docs/dashboard.png) to save the dashboard with a running VM there.
DASHBOARD_PNG = os.environ.get("VIRTFLEET_DASHBOARD_PNG")


def login(page: Page, url: str, username: str, password: str) -> None:
    page.goto(url + "/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("#who")).to_contain_text(username)


def power(page: Page, state: str, timeout: int = OP_MS) -> None:
    """Wait until the instance page's header shows power state ``state``."""
    badge = page.locator(".instance-head h1 [data-power]")
    expect(badge).to_have_attribute("data-power", state, timeout=timeout)


def act(page: Page, label: str) -> None:
    page.locator(".instance-head").get_by_role("button", name=label, exact=True).click()


def wait_terminal(page: Page, pattern: str, timeout_ms: int = BOOT_MS) -> None:
    page.wait_for_function(
        """(p) => { const el = document.querySelector('.serial-screen');
                   if (!el || !el.terminal) return false;
                   const b = el.terminal.buffer.active; let s = '';
                   for (let i = 0; i < b.length; i++)
                     s += b.getLine(i).translateToString(true) + '\\n';
                   return new RegExp(p).test(s); }""",
        arg=pattern,
        timeout=timeout_ms,
    )


def test_admin_creates_runs_uses_and_deletes_a_vm(
    ui_daemon: Daemon, page: Page, shots: Shots
) -> None:
    """Log in; create a VM with the wizard; start it; the serial console shows the boot
    marker and runs a command; pause, resume, stop and delete it from its page."""
    d = ui_daemon
    login(page, d.url, "admin", ADMIN_PASSWORD)
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
    shots.step("dashboard-empty")

    page.get_by_role("link", name="Instances", exact=True).click()
    page.get_by_role("button", name="Create instance").click()
    dialog = page.locator("dialog")
    expect(dialog.get_by_label("Source")).to_have_value("tiny")
    dialog.get_by_label("Name", exact=True).fill("web-1")
    dialog.get_by_role("button", name="Next").click()
    dialog.get_by_label("vCPUs").fill("1")
    dialog.get_by_label("Memory (MiB)").fill("256")
    dialog.get_by_label("virtio (paravirtualized)").check()
    shots.step("wizard-hardware")
    dialog.get_by_role("button", name="Next").click()
    dialog.get_by_label("Network", exact=True).select_option("user")
    dialog.get_by_role("button", name="Next").click()
    dialog.get_by_label("Hostname").fill("web-one")
    dialog.get_by_role("button", name="Next").click()
    dialog.get_by_label("Start after create").uncheck()
    sent = json.loads(dialog.locator("#wiz-request").inner_text().split("\n", 1)[1])
    assert dialog.locator("#wiz-request").inner_text().startswith("POST /1.0/instances\n")
    assert sent["name"] == "web-1" and sent["image"] == "tiny" and sent["start"] is False
    assert sent["nics"] == [{"mode": "user"}]
    assert sent["cloud_init"] == {"hostname": "web-one"}
    shots.step("wizard-review")
    dialog.get_by_role("button", name="Create").click()

    expect(page).to_have_url(re.compile(r"#/instances/web-1"))
    power(page, "stopped")
    expect(page.locator(".instance-head [data-mode]")).to_have_text(re.compile("KVM|TCG"))
    act(page, "Start")
    power(page, "running")
    expect(page.locator(".task[data-status=success]").first).to_be_visible()
    shots.step("running")

    page.get_by_role("tab", name="Console").click()
    wait_terminal(page, "VIRTFLEET-READY")
    page.locator(".serial-screen").click()
    page.keyboard.type("echo ui-$((6*7))\n")
    wait_terminal(page, r"ui-42", 30_000)
    shots.step("serial-console")

    if DASHBOARD_PNG:
        page.get_by_role("link", name="Dashboard").click()
        expect(page.locator("#card-instances-section")).to_contain_text("1 instance")
        page.wait_for_timeout(500)
        page.screenshot(path=str(ROOT / DASHBOARD_PNG))
        page.go_back()

    page.get_by_role("tab", name="Summary").click()
    act(page, "Pause")
    power(page, "paused")
    shots.step("paused")
    act(page, "Resume")
    power(page, "running")
    act(page, "Stop")
    power(page, "stopped", timeout=OP_MS)
    shots.step("stopped")

    act(page, "Delete")
    confirm = page.locator("dialog")
    expect(confirm).to_contain_text("cannot be undone")
    confirm.get_by_role("button", name="Delete").click()
    expect(page).to_have_url(re.compile(r"#/instances$"), timeout=OP_MS)
    expect(page.locator("tr[data-name=web-1]")).to_have_count(0, timeout=OP_MS)
    shots.step("deleted")
    assert not [m for m in shots.console if m.startswith("pageerror")], shots.console


def test_graphical_console_and_screenshot(ui_daemon: Daemon, page: Page, shots: Shots) -> None:
    """A running VM's graphical console (noVNC over the vnc websocket with a fresh ticket)
    draws a non-blank screen, and its summary shows a screenshot thumbnail."""
    d = ui_daemon
    d.create("gfx-1", start=True)
    d.wait_marker("gfx-1")
    login(page, d.url, "admin", ADMIN_PASSWORD)
    page.goto(d.url + "/#/instances/gfx-1")
    power(page, "running")
    page.get_by_role("tab", name="Console").click()
    page.get_by_role("button", name="Graphical console").click()
    expect(page.locator(".console-status")).to_have_text("Connected.", timeout=30_000)
    page.wait_for_function(
        """() => { const c = document.querySelector('.vnc-screen canvas');
                   if (!c || !c.width || !c.height) return false;
                   const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                   for (let i = 4; i < px.length; i += 4)
                     if (px[i] !== px[0] || px[i+1] !== px[1] || px[i+2] !== px[2]) return true;
                   return false; }""",
        timeout=60_000,
    )
    shots.step("graphical-console")

    page.get_by_role("tab", name="Summary").click()
    thumb = page.locator("img.screenshot")
    expect(thumb).to_be_visible()
    page.wait_for_function(
        "() => { const i = document.querySelector('img.screenshot'); "
        "return i && i.complete && i.naturalWidth > 0; }",
        timeout=30_000,
    )
    shots.step("summary-screenshot")


def test_viewer_sees_no_mutating_controls_and_cannot_forge_a_change(
    ui_daemon: Daemon, page: Page, shots: Shots
) -> None:
    """A viewer (created through the API by admin) sees instances but no create, bulk or
    power buttons and no console; a change forged from their page gets 403 forbidden;
    logging out ends the session."""
    d = ui_daemon
    d.create("vm-ro", start=False)
    with httpx.Client(base_url=d.url, timeout=30) as admin:
        r = admin.post("/1.0/login", json={"username": "admin", "password": ADMIN_PASSWORD})
        assert r.status_code == 200, r.text
        r = admin.post(
            "/1.0/users",
            json={"username": "vera", "password": "viewer-pass-123", "role": "viewer"},
            headers={"X-CSRF-Token": r.json()["csrf_token"]},
        )
        assert r.status_code in (200, 201), r.text

    login(page, d.url, "vera", "viewer-pass-123")
    expect(page.locator("#who")).to_contain_text("viewer")
    page.get_by_role("link", name="Instances", exact=True).click()
    expect(page.locator("tr[data-name=vm-ro]")).to_be_visible()
    expect(page.get_by_role("button", name="Create instance")).to_have_count(0)
    expect(page.locator("[data-bulk], tbody input[type=checkbox]")).to_have_count(0)
    shots.step("viewer-list")

    page.get_by_role("link", name="vm-ro").click()
    power(page, "stopped")
    expect(page.locator("[data-action]")).to_have_count(0)
    page.get_by_role("tab", name="Console").click()
    expect(page.locator(".tabpanel")).to_contain_text("operator role")
    shots.step("viewer-instance")

    refused: dict[str, Any] = page.evaluate(
        """async () => {
          const csrf = document.cookie.split('; ').find(c => c.startsWith('vf_csrf=')).slice(8);
          const r = await fetch('/1.0/instances/vm-ro/state', {method: 'PUT',
            headers: {'Content-Type': 'application/json', 'X-CSRF-Token': csrf},
            body: JSON.stringify({action: 'start'})});
          return {status: r.status, body: await r.json()};
        }"""
    )
    assert refused["status"] == 403, refused
    assert refused["body"]["error"]["code"] == "forbidden", refused
    assert d.client.get_instance("vm-ro").status.power == "stopped"

    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_role("button", name="Log in")).to_be_visible()
    page.reload()  # the session is gone server-side, not just hidden
    expect(page.get_by_label("Username")).to_be_visible()


def test_dashboard_shows_host_capacity_counts_and_checks(
    ui_daemon: Daemon, page: Page, shots: Shots, tmp_path: Path
) -> None:
    """The dashboard shows host capacity, instances by state and mode, the host check
    summary and recent events; it stays usable in a narrow window."""
    d = ui_daemon
    d.create("dash-1", start=False)
    login(page, d.url, "admin", ADMIN_PASSWORD)
    expect(page.locator("#card-host-section")).to_contain_text("host CPUs")
    expect(page.locator("#card-instances-section")).to_contain_text("1 instance")
    expect(page.locator("#card-instances-section [data-state=stopped]")).to_contain_text("1")
    expect(page.locator("#card-host-check-section")).to_contain_text(re.compile(r"\d+ ok"))
    expect(page.locator("#card-recent-events-section")).to_contain_text("instance.created")
    shots.step("dashboard")
    page.set_viewport_size({"width": 420, "height": 800})
    page.get_by_role("link", name="Instances", exact=True).click()
    expect(page.get_by_role("button", name="Create instance")).to_be_visible()
    width: int = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 420, f"the page scrolls sideways in a narrow window ({width} px)"
    shots.step("narrow")
