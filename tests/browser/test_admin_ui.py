"""Administration in headless Chromium against one daemon (no guest boots): users, an API
token shown once, used with curl and revoked (then 401), the audit log's filters, the event
history's live follow; and a viewer who sees every page but no mutating control, whose
forged changes are refused."""

from __future__ import annotations

import re
import subprocess
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.integration.conftest import Daemon

from .conftest import ADMIN_PASSWORD, Shots, admin_http
from .pagecheck import check_page
from .test_ui import login

pytestmark = pytest.mark.integration

VIEWER, VIEWER_PW = "vera", "viewer-pass-123"
# What a viewer may press: navigation, filters, chart ranges, tabs; nothing that changes state.
VIEWER_BUTTONS = re.compile(
    r"^(Filter|Summary|Hardware|Console|Container|Snapshots|Backups|Metrics|Networks|Settings|Details|"
    r"\d+ (min|hour|day|days)|Change my password)$"
)


PAGES = [
    ("", "Dashboard"), ("instances", "Instances"), ("instances/vm-ro", "vm-ro"),
    ("networks", "Networks"), ("images", "Images and templates"), ("templates", "Templates"),
    ("backups", "Backups"), ("alerts", "Alerts"), ("admin/users", "Administration"),
    ("admin/audit", "Audit log"), ("admin/events", "Event history"), ("host", "Host"),
    ("admin/operations", "Operations"), ("hosts", "Hosts"),
]  # fmt: skip


def _curl(url: str, token: str) -> int:
    auth = f"Authorization: Bearer {token}"
    out = subprocess.run(
        ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-H", auth, url + "/1.0/instances"],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    return int(out.stdout)


def test_users_token_once_curl_revoke_and_the_audit_log(
    module_ui_daemon: Daemon, page: Page, shots: Shots
) -> None:
    """Create a user; create a token (its secret shown once), curl works with it; revoke it
    on the page and curl gets 401; the audit log filtered to admin's token changes lists the
    create and the revoke, and nothing else."""
    d = module_ui_daemon
    login(page, d.url, "admin", ADMIN_PASSWORD)
    page.get_by_role("link", name="Administration").click()
    page.get_by_label("Username").fill("olga")
    page.get_by_label("Initial password").fill("operator-pass-1")
    page.get_by_label("Role", exact=True).select_option("operator")
    page.get_by_role("button", name="Create user").click()
    olga = page.locator("tr[data-user=olga]")
    expect(olga.get_by_label("Role of olga")).to_have_value("operator")
    olga.get_by_label("Role of olga").select_option("viewer")
    expect(page.get_by_role("status").filter(has_text="olga is now viewer")).to_be_visible()
    olga.get_by_role("button", name="Disable olga").click()
    expect(olga.locator(".user-state")).to_have_text("disabled")
    with httpx.Client(base_url=d.url, timeout=30) as anon:
        r = anon.post("/1.0/login", json={"username": "olga", "password": "operator-pass-1"})
        assert r.status_code == 401, r.text
    olga.get_by_role("button", name="Enable olga").click()
    expect(olga.locator(".user-state")).to_have_text("active")
    with admin_http(d, "olga", "operator-pass-1") as olga_http:
        assert olga_http.get("/1.0/whoami").json()["role"] == "viewer"

    page.get_by_label("Token role").select_option("operator")
    page.get_by_label("Description").fill("ci pipeline")
    page.get_by_role("button", name="Create token").click()
    secret_box = page.get_by_label("Token secret")
    expect(secret_box).to_be_focused()
    token = secret_box.input_value()
    assert token and _curl(d.url, token) == 200
    check_page(page, "administration")
    page.reload()
    expect(page.get_by_label("Token secret")).to_have_count(0)  # shown once, never again
    row = page.locator("tbody tr", has_text="ci pipeline")
    expect(row.locator(".token-state")).to_have_text("active")
    token_id = row.get_attribute("data-token")
    row.get_by_role("button", name=f"Revoke token {token_id}").click()
    page.locator("#dialog").get_by_role("button", name="Revoke").click()
    expect(row.locator(".token-state")).to_contain_text("revoked")
    assert _curl(d.url, token) == 401

    page.get_by_role("link", name="Audit log").click()
    page.get_by_label("Actor").fill("admin")
    page.get_by_label("Target (path prefix)").fill("/1.0/tokens")
    page.get_by_role("button", name="Filter").click()
    entries = page.locator("table.audit tbody tr")
    expect(entries).to_have_count(2)
    expect(entries.nth(0)).to_contain_text("DELETE")
    expect(entries.nth(1)).to_contain_text("POST")
    page.get_by_label("Action (method)").select_option("DELETE")
    page.get_by_role("button", name="Filter").click()
    expect(entries).to_have_count(1)
    expect(entries.first).to_contain_text(f"/1.0/tokens/{token_id}")
    check_page(page, "audit")


def test_event_history_filters_and_follows_live(
    module_ui_daemon: Daemon, page: Page, shots: Shots
) -> None:
    """With live follow on, an instance created through the API appears at the top without a
    reload; the kind filter narrows the list."""
    d = module_ui_daemon
    login(page, d.url, "admin", ADMIN_PASSWORD)
    page.goto(d.url + "/#/admin/events")
    expect(page.get_by_label("Follow live")).to_be_checked()
    rows = page.locator("table.events tbody tr")
    expect(rows.first).not_to_contain_text("ev-live")
    d.create("ev-live", start=False)
    expect(rows.first).to_contain_text("ev-live")
    page.get_by_label("Kind starts with").fill("instance.created")
    expect(rows.filter(has_text="ev-live")).to_have_count(1)
    kinds = {k for k in page.locator("table.events tbody th").all_inner_texts()}
    assert kinds == {"instance.created"}, kinds
    check_page(page, "events")


def test_viewer_sees_every_page_but_no_mutating_control(
    module_ui_daemon: Daemon, page: Page, shots: Shots
) -> None:
    """A viewer visits every page: each renders, none offers a mutating control (but the
    change of their own password); changes forged from the viewer's session are refused
    with 403 and change nothing."""
    d = module_ui_daemon
    d.create("vm-ro", start=False)
    with admin_http(d) as http:
        r = http.post(
            "/1.0/users", json={"username": VIEWER, "password": VIEWER_PW, "role": "viewer"}
        )
        assert r.status_code in (200, 201), r.text
    login(page, d.url, VIEWER, VIEWER_PW)
    for route, heading in PAGES:
        page.goto(f"{d.url}/#/{route}")
        expect(page.locator("main h1")).to_contain_text(heading)
        page.wait_for_load_state("networkidle")
        buttons = page.locator("main button:visible, dialog[open] button").all_inner_texts()
        mutating = [b for b in buttons if not VIEWER_BUTTONS.match(b.strip())]
        assert mutating == [], f"{route or 'dashboard'}: a viewer sees {mutating}"
        expect(
            page.locator("main form:not([aria-label$=filters], #my-password) button[type=submit]")
        ).to_have_count(0)
    forged: list[dict[str, Any]] = page.evaluate(
        """async () => {
          const csrf = document.cookie.split('; ').find(c => c.startsWith('vf_csrf=')).slice(8);
          const send = async (method, path, body) => {
            const r = await fetch(path, {method, body: JSON.stringify(body),
              headers: {'Content-Type': 'application/json', 'X-CSRF-Token': csrf}});
            return {path, status: r.status, code: (await r.json()).error?.code};
          };
          return [await send('POST', '/1.0/backups', {instance: 'vm-ro'}),
                  await send('PUT', '/1.0/alerts/rules/x', {name: 'x', metric: 'cpu_pct'}),
                  await send('POST', '/1.0/users', {username: 'eve', password: 'eve-pass-123'}),
                  await send('POST', '/1.0/templates', {name: 't', instance: 'vm-ro'}),
                  await send('PUT', '/1.0/backup-schedules/s',
                             {instance: 'vm-ro', cron: '0 3 * * *'})];
        }"""
    )
    assert [(f["status"], f["code"]) for f in forged] == [(403, "forbidden")] * 5, forged
    with admin_http(d) as http:
        assert http.get("/1.0/backups").json() == []
        assert "eve" not in [u["username"] for u in http.get("/1.0/users").json()]
        assert http.get("/1.0/backup-schedules").json() == []
