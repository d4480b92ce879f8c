"""The pages beyond instances, in headless Chromium against one daemon for the module:
templates, backups and schedules, alerts, administration (users, tokens, audit, events).
Each page also passes pagecheck (labelled controls, 420 px, docs screenshot)."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from tests.integration.conftest import Daemon

from .conftest import ADMIN_PASSWORD, Shots, admin_http, wait_op
from .pagecheck import check_page
from .test_ui import OP_MS, login

pytestmark = pytest.mark.integration


def test_templates_page_makes_lists_and_guards_a_template(
    module_ui_daemon: Daemon, page: Page, shots: Shots
) -> None:
    """A template made from a stopped VM on the page shows its source and defaults; a linked
    clone is listed under it; deleting it is refused with the clone named."""
    d = module_ui_daemon
    d.create("base", start=False, vcpus=2, memory_mib=192)
    login(page, d.url, "admin", ADMIN_PASSWORD)
    page.get_by_role("link", name="Templates").click()
    expect(page.locator("tbody")).to_contain_text("No templates yet.")
    page.get_by_label("From").select_option("instance:base")
    page.get_by_label("Template name").fill("base-tpl")
    page.get_by_role("button", name="Make template").click()
    row = page.locator("tr[data-template=base-tpl]")
    expect(row).to_contain_text("instance/base", timeout=OP_MS)
    expect(row.locator(".defaults")).to_contain_text("vcpus 2")
    expect(row.locator(".defaults")).to_contain_text("memory_mib 192")
    with admin_http(d) as http:
        wait_op(http, http.post("/1.0/templates/base-tpl/instances", json={"names": ["clone-1"]}))
    page.reload()
    expect(row.locator(".clones")).to_have_text("clone-1")
    check_page(page, "templates")
    row.get_by_role("button", name="Delete template base-tpl").click()
    page.locator("#dialog").get_by_role("button", name="Delete").click()
    expect(page.get_by_role("alert")).to_contain_text("clone-1")
    expect(row).to_be_visible()
    row.get_by_role("button", name="Deploy clones of base-tpl").click()
    expect(page.locator("dialog").get_by_label("Source")).to_have_value("base-tpl")
    expect(page.locator("dialog").get_by_label("Names or pattern")).to_be_visible()


def test_backups_page_backs_up_verifies_prunes_and_restores_to_a_new_vm(
    module_ui_daemon: Daemon, page: Page, shots: Shots
) -> None:
    """A running VM backed up twice from the page (full, then incremental); the repository
    card counts them; verify says intact; prune's preview names the one that would go; the
    kept backup restored as a new VM that boots."""
    d = module_ui_daemon
    d.create("bk", start=True)
    d.wait_marker("bk")
    login(page, d.url, "admin", ADMIN_PASSWORD)
    page.get_by_role("link", name="Backups").click()
    expect(page.locator("#repository [data-fact='Last verify']")).to_have_text("never")
    page.get_by_label("Instance", exact=True).select_option("bk")
    for kind in ("full", "incremental"):
        page.get_by_role("button", name="Back up now").click()
        expect(page.get_by_role("status").filter(has_text="made")).to_contain_text(
            f"({kind})", timeout=OP_MS
        )
    rows = page.locator("tr[data-instance=bk]")
    expect(rows).to_have_count(2)
    expect(page.locator("#repository [data-fact='Backups']")).to_have_text("2 (1 instance)")
    page.get_by_role("button", name="Verify every backup").click()
    expect(page.locator("#repository [data-fact='Last verify']")).to_contain_text(
        "OK", timeout=OP_MS
    )
    oldest, newest = (
        rows.nth(1).get_attribute("data-backup"),
        rows.nth(0).get_attribute("data-backup"),
    )
    d.action("bk", "stop")  # free the CPU for the restored VM

    page.locator("#prune").get_by_label("Keep last").fill("1")
    page.get_by_role("button", name="Preview").click()
    expect(page.locator(".prune-preview")).to_contain_text(f"Would remove 1: {oldest}")
    shots.step("prune-preview")
    page.get_by_role("button", name="Prune now").click()
    expect(rows).to_have_count(1, timeout=OP_MS)
    assert rows.first.get_attribute("data-backup") == newest
    check_page(page, "backups")

    page.get_by_role("button", name=f"Restore {newest}").click()
    dialog = page.locator("dialog")
    dialog.get_by_label("New VM name").fill("bk-copy")
    dialog.get_by_label("Start after restore").check()
    dialog.get_by_role("button", name="Restore").click()
    expect(page.get_by_role("status").filter(has_text="Restored")).to_contain_text(
        "as bk-copy", timeout=OP_MS
    )
    d.wait_marker("bk-copy")
    for name in ("bk", "bk-copy"):
        op = d.client.delete_instance(name, force=True, disks=True)
        d.client.wait_operation(op.id, timeout_s=120)


def test_schedule_made_with_the_cron_helper_shows_its_next_runs(
    module_ui_daemon: Daemon, page: Page, shots: Shots
) -> None:
    """The cron helper shows next runs as one types and refuses a bad expression; the saved
    schedule's row lists its next runs (03:00 each day)."""
    d = module_ui_daemon
    d.create("nightly-vm", start=False)
    login(page, d.url, "admin", ADMIN_PASSWORD)
    page.get_by_role("link", name="Backups").click()
    page.get_by_label("Schedule name").fill("nightly")
    page.get_by_label("Instance to back up").select_option("nightly-vm")
    page.get_by_label("Cron (minute hour day month weekday)").fill("every night")
    expect(page.locator("#sched-cron-next")).to_contain_text("invalid cron expression")
    page.get_by_label("Preset").select_option("0 3 * * *")
    expect(page.locator("#sched-cron-next")).to_contain_text("Next runs:")
    page.get_by_role("button", name="Add schedule").click()
    row = page.locator("tr[data-schedule=nightly]")
    expect(row).to_contain_text("0 3 * * *")
    expect(row).to_contain_text("last 7")
    next_runs = row.locator(".next-runs")
    expect(next_runs).not_to_have_text("…")
    runs = next_runs.inner_text().split("; ")
    assert len(runs) == 3, runs
    with admin_http(d) as http:
        r = http.get("/1.0/backup-schedules/next-runs", params={"cron": "0 3 * * *", "count": 3})
    shown = page.evaluate(
        "(ts) => ts.map((t) => new Date(t).toLocaleString())", r.json()["next_runs"]
    )
    assert runs == shown
    with admin_http(d) as http:
        saved = http.get("/1.0/backup-schedules").json()
    assert [(s["name"], s["instance"], s["keep_last"]) for s in saved] == [
        ("nightly", "nightly-vm", 7)
    ]
    check_page(page, "backup-schedules")


def test_alert_rule_fires_on_a_vms_cpu_shows_in_the_header_and_is_silenced(
    module_ui_daemon: Daemon, page: Page, shots: Shots
) -> None:
    """A rule added on the Alerts page (cpu_pct > 0.1 on instance/hot, for 0 s) fires on a
    booted VM: the header badge counts it; silencing it from the page hides the badge and
    lists the silence with its expiry."""
    d = module_ui_daemon
    d.create("hot", start=True)
    login(page, d.url, "admin", ADMIN_PASSWORD)
    badge = page.locator("#alert-badge")
    page.get_by_role("link", name="Alerts", exact=True).click()
    page.wait_for_load_state("networkidle")
    before = int(badge.get_attribute("data-count") or 0)  # other tests' alerts (shared daemon)
    loud = lambda n: f"{n} alert{'' if n == 1 else 's'} firing"  # noqa: E731
    expect(page.locator("#webhooks")).to_contain_text("No webhook configured")
    page.get_by_label("Rule name", exact=True).fill("hot-cpu")
    page.get_by_label("Target (host, instance/*, instance/NAME)").fill("instance/hot")
    page.get_by_label("Metric", exact=True).select_option("cpu_pct")
    page.get_by_label("Operator").select_option(">")
    page.get_by_label("Threshold", exact=True).fill("0.1")
    page.get_by_label("For (seconds)").fill("0")
    page.get_by_role("button", name="Save rule").click()
    expect(page.locator("tr[data-rule=hot-cpu]")).to_contain_text("cpu_pct > 0.1")
    expect(badge).to_have_text(loud(before + 1), timeout=OP_MS)
    firing = page.locator("tr[data-alert=hot-cpu]")
    expect(firing).to_have_attribute("data-state", "firing")
    expect(firing).to_contain_text("instance/hot")
    check_page(page, "alerts")
    firing.get_by_label("Silence hot-cpu for").select_option("14400")
    firing.get_by_role("button", name="Silence").click()
    if before:
        expect(badge).to_have_text(loud(before))
    else:
        expect(badge).to_be_hidden()
    expect(firing).to_contain_text("silenced until")
    expect(page.locator("tr[data-silence='hot-cpu:instance/hot']")).to_be_visible()
    shots.step("alert-silenced")
    op = d.client.delete_instance("hot", force=True, disks=True)
    d.client.wait_operation(op.id, timeout_s=120)


def test_every_other_page_is_labelled_and_fits_420px(
    module_ui_daemon: Daemon, page: Page, shots: Shots
) -> None:
    """Dashboard, instances, an instance, networks, images and the wizard's review step:
    every control named in the accessibility snapshot, no sideways scroll at 420 px."""
    d = module_ui_daemon
    d.create("page-vm", start=False)
    login(page, d.url, "admin", ADMIN_PASSWORD)
    expect(page.locator("#card-host-metrics-section figure").first).to_be_visible()
    check_page(page, "dashboard")
    for route, name in [("instances", "instances"), ("instances/page-vm", "instance"),
                        ("networks", "networks"), ("images", "images")]:  # fmt: skip
        page.goto(f"{d.url}/#/{route}")
        page.wait_for_load_state("networkidle")
        check_page(page, name)
    page.goto(f"{d.url}/#/instances")
    page.get_by_role("button", name="Create instance").click()
    dialog = page.locator("dialog")
    dialog.get_by_label("Name", exact=True).fill("new-vm")
    for _ in range(4):
        dialog.get_by_role("button", name="Next").click()
    expect(dialog.locator("#wiz-request")).to_contain_text('"name": "new-vm"')
    check_page(page, "create-wizard")
    page.keyboard.press("Tab")  # focus stays in the dialog, wrapping round
    for _ in range(12):
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.closest('dialog') !== null")
