"""The rest of what the CLI gives an admin of one host, in the web UI (headless Chromium;
a fake-driver daemon unless a real guest is needed): the wizard's restart policy, hot-plug
ceilings, balloon floor and NIC model (`vm create --restart-policy --max-vcpus ...`) and the
Hardware tab's ceilings (`vm set`); a rule silenced ahead of time and a rule saved disabled
(`alert silence`, `alert set --disable`); one's own password (`user passwd`); a saved
screenshot (`vm screenshot`); the console log of a stopped VM (`logs`)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.integration.conftest import Daemon

from .conftest import ADMIN_PASSWORD, admin_http, fake_ui_daemon, started_vm
from .pagecheck import check_page
from .test_ui import OP_MS, login

pytestmark = pytest.mark.integration

VIEWER, VIEWER_PW = "vince", "viewer-pass-789"


@pytest.fixture(scope="module")
def fake_daemon() -> Iterator[Daemon]:
    yield from fake_ui_daemon("vfparity", (VIEWER, VIEWER_PW))


def test_wizard_and_hardware_tab_set_policy_ceilings_floor_and_nic_model(
    fake_daemon: Daemon, pattern_image: str, page: Page
) -> None:
    """The wizard's review carries the restart policy, the CPU and RAM ceilings, the balloon
    floor and the NIC model, and the VM gets them; the Hardware tab raises the CPU ceiling
    and lifts the floor (an emptied field sends null)."""
    d = fake_daemon
    login(page, d.url, "admin", ADMIN_PASSWORD)
    page.get_by_role("link", name="Instances", exact=True).click()
    page.get_by_role("button", name="Create instance").click()
    dialog = page.locator("dialog")
    dialog.get_by_label("Name", exact=True).fill("adv-vm")
    dialog.get_by_role("button", name="Next").click()
    dialog.get_by_label("Memory (MiB)").fill("256")
    dialog.get_by_label("Restart policy").select_option("on-failure")
    dialog.get_by_text("Hot-plug ceilings and balloon floor").click()
    dialog.get_by_label("CPU hot-plug ceiling").fill("4")
    dialog.get_by_label("Boot RAM ceiling, MiB").fill("512")
    dialog.get_by_label("Balloon floor, MiB").fill("128")
    check_page(page, "wizard-advanced")
    dialog.get_by_role("button", name="Next").click()
    dialog.get_by_label("Network", exact=True).select_option("user")
    dialog.get_by_label("NIC model").select_option("e1000")
    dialog.get_by_role("button", name="Next").click()
    dialog.get_by_role("button", name="Next").click()
    dialog.get_by_label("Start after create").uncheck()
    sent = json.loads(dialog.locator("#wiz-request").inner_text().split("\n", 1)[1])
    assert {k: sent[k] for k in ("restart_policy", "max_vcpus", "max_memory_mib")} == {
        "restart_policy": "on-failure", "max_vcpus": 4, "max_memory_mib": 512,
    }  # fmt: skip
    assert (sent["min_memory_mib"], sent["nics"]) == (128, [{"mode": "user", "model": "e1000"}])
    dialog.get_by_role("button", name="Create").click()
    expect(page.locator(".instance-head [data-power]")).to_have_text("stopped", timeout=OP_MS)
    with admin_http(d) as http:
        spec = http.get("/1.0/instances/adv-vm").json()["spec"]
    assert (spec["restart_policy"], spec["max_vcpus"], spec["max_memory_mib"]) == (
        "on-failure", 4, 512
    )  # fmt: skip
    assert (spec["min_memory_mib"], spec["nics"][0]["model"]) == (128, "e1000")

    page.get_by_role("tab", name="Hardware").click()
    form = page.locator("#resources-form")
    expect(form.get_by_label("CPU hot-plug ceiling (next boot)")).to_have_value("4")
    form.get_by_label("CPU hot-plug ceiling (next boot)").fill("6")
    form.get_by_label("Balloon floor, MiB (empty = none)").fill("")
    form.get_by_role("button", name="Apply").click()
    expect(form.get_by_label("CPU hot-plug ceiling (next boot)")).to_have_value("6", timeout=OP_MS)
    with admin_http(d) as http:
        spec = http.get("/1.0/instances/adv-vm").json()["spec"]
    assert (spec["max_vcpus"], spec["min_memory_mib"], spec["max_memory_mib"]) == (6, None, 512)


def test_silence_a_rule_ahead_of_time_and_save_a_rule_disabled(
    fake_daemon: Daemon, page: Page
) -> None:
    """A silence on a rule and a target glob, with its comment and a day's expiry, before
    anything fires; a threshold rule saved with "Enabled" unticked is kept, off."""
    d = fake_daemon
    with admin_http(d) as http:
        rule = http.get("/1.0/alerts/rules").json()[0]["name"]
    login(page, d.url, "admin", ADMIN_PASSWORD)
    page.get_by_role("link", name="Alerts", exact=True).click()
    form = page.locator("#rule-silence")
    form.get_by_label("Rule to silence").select_option(rule)
    form.get_by_label("On targets").fill("instance/web-*")
    form.get_by_label("Silence duration").select_option("86400")
    form.get_by_label("Comment").fill("maintenance window")
    asked = time.time()
    form.get_by_role("button", name="Add silence").click()
    row = page.locator(f"tr[data-silence='{rule}:instance/web-*']")
    expect(row).to_contain_text("maintenance window")
    check_page(page, "alerts-silence")
    with admin_http(d) as http:
        silences = http.get("/1.0/alerts/silences").json()
    (silence,) = [s for s in silences if s["target"] == "instance/web-*"]
    assert silence["rule"] == rule
    assert asked + 86400 - 5 <= silence["until"] <= time.time() + 86400 + 5

    page.get_by_label("Rule name", exact=True).fill("quiet-disk")
    page.get_by_label("Metric", exact=True).select_option("disk_write_bps")
    page.get_by_label("Enabled (untick to keep the rule, off)").uncheck()
    page.get_by_role("button", name="Save rule").click()
    expect(page.locator("tr[data-rule=quiet-disk]")).to_contain_text("no")
    with admin_http(d) as http:
        saved = {r["name"]: r for r in http.get("/1.0/alerts/rules").json()}
    assert saved["quiet-disk"]["enabled"] is False


def test_a_viewer_changes_their_own_password(fake_daemon: Daemon, page: Page) -> None:
    """A wrong current password is refused with its code and changes nothing; the right
    one sets the new password (the old one no longer logs in, the new one does)."""
    d = fake_daemon
    new = "viewer-new-pass-1"
    login(page, d.url, VIEWER, VIEWER_PW)
    page.get_by_role("link", name="Administration").click()
    form = page.locator("#my-password")
    check_page(page, "administration-viewer")
    form.get_by_label("Current password").fill("not-my-password")
    form.get_by_label("New password").fill(new)
    form.get_by_role("button", name="Change my password").click()
    expect(page.get_by_role("alert")).to_contain_text("[")
    form.get_by_label("Current password").fill(VIEWER_PW)
    form.get_by_label("New password").fill(new)
    form.get_by_role("button", name="Change my password").click()
    expect(page.get_by_role("status").filter(has_text="password")).to_contain_text(
        "Your password is changed"
    )
    with httpx.Client(base_url=d.url) as http:
        old = http.post("/1.0/login", json={"username": VIEWER, "password": VIEWER_PW})
        fresh = http.post("/1.0/login", json={"username": VIEWER, "password": new})
    assert (old.status_code, fresh.status_code) == (401, 200)


def test_save_a_screenshot_of_a_running_vm(
    fake_daemon: Daemon, pattern_image: str, page: Page
) -> None:
    """The Summary's "Save as PNG" downloads the VM's screen as a PNG file."""
    d = fake_daemon
    started_vm(d, "shot-vm", pattern_image, stop=False)
    login(page, d.url, "admin", ADMIN_PASSWORD)
    page.goto(f"{d.url}/#/instances/shot-vm")
    with page.expect_download() as download:
        page.get_by_role("link", name="Save as PNG").click()
    assert download.value.suggested_filename == "shot-vm.png"
    with open(download.value.path(), "rb") as png:
        assert png.read(8) == b"\x89PNG\r\n\x1a\n"


def test_console_log_of_a_stopped_vm(ui_daemon: Daemon, page: Page) -> None:
    """Once a real VM stopped, its Console tab shows its console log (the boot marker),
    as `virtfleet logs` does, for a viewer too."""
    d = ui_daemon
    d.create("logged", start=True)
    d.wait_marker("logged")
    d.action("logged", "stop", force=True)
    with admin_http(d) as http:
        user = {"username": VIEWER, "password": VIEWER_PW, "role": "viewer"}
        assert http.post("/1.0/users", json=user).status_code in (200, 201)
    try:
        for user, password in (("admin", ADMIN_PASSWORD), (VIEWER, VIEWER_PW)):
            login(page, d.url, user, password)
            page.goto(f"{d.url}/#/instances/logged/console")
            expect(page.get_by_role("button", name="Console log")).to_have_attribute(
                "aria-pressed", "true"
            )
            expect(page.locator("#console-log-text")).to_contain_text("VIRTFLEET-READY")
            expect(page.locator("#console-serial")).to_have_count(0)
            check_page(page, f"console-log-{user}")
            page.get_by_role("button", name="Log out").click()
    finally:
        op = d.client.delete_instance("logged", force=True, disks=True)
        d.client.wait_operation(op.id, timeout_s=120)


def test_template_from_an_image_gives_clones_a_guest_agent(
    fake_daemon: Daemon, pattern_image: str, page: Page
) -> None:
    """ "Clones get a guest agent channel" on a template made from an image (`template
    create --from-image --agent`) shows in its defaults, and a clone deployed from it has
    the channel."""
    d = fake_daemon
    login(page, d.url, "admin", ADMIN_PASSWORD)
    page.get_by_role("link", name="Templates").click()
    page.get_by_label("From").select_option(f"image:{pattern_image}")
    page.get_by_label("Template name").fill("agent-tpl")
    page.get_by_label("Clones get a guest agent channel").check()
    page.get_by_role("button", name="Make template").click()
    row = page.locator("tr[data-template=agent-tpl]")
    expect(row.locator(".defaults")).to_contain_text("guest_agent true", timeout=OP_MS)
    with admin_http(d) as http:
        r = http.post("/1.0/templates/agent-tpl/instances", json={"names": ["agent-clone"]})
        assert d.client.wait_operation(r.json()["id"], timeout_s=60).status == "success"
        assert http.get("/1.0/instances/agent-clone").json()["spec"]["guest_agent"] is True


def test_oci_import_from_a_registry_reference(fake_daemon: Daemon, page: Page) -> None:
    """A docker:// reference instead of a path is fetched by the daemon with skopeo
    (`image import-oci --from`): here a loopback registry that is not there, so the task
    fails with its code and the reference, and no image is made."""
    d = fake_daemon
    ref = "docker://127.0.0.1:1/nothing:1"
    login(page, d.url, "admin", ADMIN_PASSWORD)
    page.get_by_role("link", name="Images").click()
    page.get_by_label("Image name").fill("from-registry")
    page.get_by_label("Or a registry image").fill(ref)
    page.get_by_role("button", name="Import", exact=True).click()
    failed = page.locator("#tasks [data-status=failure]", has_text="from-registry")
    expect(failed).to_contain_text("[", timeout=OP_MS)
    expect(page.locator("p.notice-error[role=alert]")).to_contain_text("127.0.0.1:1/nothing")
    with admin_http(d) as http:
        assert http.get("/1.0/images/from-registry").status_code == 404


def test_operations_page_lists_filters_and_names_errors(
    fake_daemon: Daemon, pattern_image: str, page: Page
) -> None:
    """The Operations page (Administration) lists what `operation list` does, newest first; the
    status filter keeps only the failed one, shown with its error code."""
    d = fake_daemon
    started_vm(d, "ops-vm", pattern_image, stop=False)
    with admin_http(d) as http:
        body = {"name": "ops-fail", "from_ref": "docker://127.0.0.1:1/none:1"}
        failed = http.post("/1.0/images/import-oci", json=body).json()["id"]
        assert d.client.wait_operation(failed, timeout_s=60).status == "failure"
        listed = [o["id"] for o in http.get("/1.0/operations").json()]
        error = http.get(f"/1.0/operations/{failed}").json()["error_code"]
    login(page, d.url, "admin", ADMIN_PASSWORD)
    page.goto(f"{d.url}/#/admin/operations")
    rows = page.locator("#operations-table tbody tr")
    expect(rows.first).to_have_attribute("data-op", listed[-1])
    assert [r.get_attribute("data-op") for r in rows.all()][: len(listed)] == listed[::-1]
    check_page(page, "operations")
    page.get_by_label("Status", exact=True).select_option("failure")
    expect(rows.first).to_have_attribute("data-op", failed)
    expect(rows.first).to_contain_text(f"[{error}]")
    assert {r.get_attribute("data-status") for r in rows.all()} == {"failure"}
