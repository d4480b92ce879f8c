"""The web UI for OCI images, container processes and start at boot, in headless Chromium
against a fake-driver daemon (no guest boots): an OCI layout imported from the Images page
shows its layers and config; an application container made in the wizard with env and a
command; the boot policy changed on an instance's Settings tab; the dashboard's boot report
and the admin's "shut down guests"; a viewer sees none of the new mutating controls."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, Route, expect

from tests.integration.conftest import Daemon
from tests.ocilayouts import Entry, image_config, layer_tar, write_layout

from .conftest import ADMIN_PASSWORD, _free_port, admin_http, wait_op
from .pagecheck import check_page
from .test_ui import login

pytestmark = pytest.mark.integration

VIEWER, VIEWER_PW = "vic", "viewer-pass-123"
RUN = {"Entrypoint": ["/bin/hello"], "Cmd": ["world"], "Env": ["PATH=/bin"], "WorkingDir": "/srv"}


@pytest.fixture(scope="module")
def fake_daemon(request: pytest.FixtureRequest) -> Iterator[Daemon]:
    """A ``--driver fake`` daemon serving the UI on a loopback port; admin's password set
    and a viewer account made."""
    data_dir = Path(tempfile.mkdtemp(prefix="vfhostui", dir="/tmp"))
    port = _free_port()
    d = Daemon(data_dir, ["--driver", "fake", "--listen", f"127.0.0.1:{port}"])
    d.env = {"VIRTFLEET_ADMIN_PASSWORD": ADMIN_PASSWORD}
    d.url = f"http://127.0.0.1:{port}"
    d.start()
    try:
        with admin_http(d) as http:
            user = {"username": VIEWER, "password": VIEWER_PW, "role": "viewer"}
            assert http.post("/1.0/users", json=user).status_code in (200, 201)
        yield d
    finally:
        d.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


def _layout(d: Daemon, name: str) -> dict[str, Any]:
    """An OCI layout of two layers in the daemon's import directory; its manifest."""
    layers = [
        layer_tar(
            [Entry("bin/", kind=b"5", mode=0o755), Entry("bin/hello", b"#!/bin/sh\n", mode=0o755)]
        ),
        layer_tar([Entry("etc/motd", b"hello from the second layer\n")]),
    ]
    return write_layout(d.data_dir / "import" / name, layers, image_config(layers, RUN))


@pytest.fixture(scope="module")
def oci_image(fake_daemon: Daemon) -> str:
    """An OCI image ``app`` imported through the API (for the tests that only use it)."""
    _layout(fake_daemon, "app-layout")
    with admin_http(fake_daemon) as http:
        wait_op(
            http, http.post("/1.0/images/import-oci", json={"name": "app", "path": "app-layout"})
        )
    return "app"


@pytest.fixture(scope="module")
def vm_image(fake_daemon: Daemon) -> str:
    """A small empty qcow2 imported as the VM image ``small`` (the fake driver boots nothing)."""
    disk = fake_daemon.data_dir / "import" / "small.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "16M"], check=True)
    with admin_http(fake_daemon) as http:
        wait_op(http, http.post("/1.0/images/import", json={"name": "small", "path": disk.name}))
    return "small"


def _spec(http: httpx.Client, name: str) -> dict[str, Any]:
    r = http.get(f"/1.0/instances/{name}")
    assert r.status_code == 200, r.text
    spec: dict[str, Any] = r.json()["spec"]
    return spec


def _container(http: httpx.Client, name: str, image: str, start: bool) -> None:
    body = {"name": name, "kind": "container", "image": image, "start": start}
    wait_op(http, http.post("/1.0/instances", json=body))


def test_import_an_oci_layout_from_the_images_page(fake_daemon: Daemon, page: Page) -> None:
    """A path outside the import directory is refused with its code; the layout in it is
    imported (tracked as a task) and the detail lists its two layers and its config."""
    d = fake_daemon
    manifest = _layout(d, "ui-layout")
    login(page, d.url, "admin", ADMIN_PASSWORD)
    page.get_by_role("link", name="Images").click()
    page.get_by_label("Image name").fill("ui-oci")
    page.get_by_label("Path on the host").fill("/etc")
    page.get_by_role("button", name="Import", exact=True).click()
    expect(page.get_by_role("alert")).to_contain_text("[path_not_allowed]", timeout=15_000)
    with admin_http(d) as http:
        assert http.get("/1.0/images/ui-oci").status_code == 404
    page.get_by_label("Path on the host").fill("ui-layout")
    page.get_by_role("button", name="Import", exact=True).click()
    expect(page.locator("#oci-status")).to_have_text("Imported ui-oci.", timeout=30_000)
    expect(page.locator("#tasks [data-status=success]").first).to_contain_text("ui-oci")
    rows = page.locator("#oci-layers tbody tr")
    expect(rows).to_have_count(2)
    for i, layer in enumerate(manifest["layers"]):
        expect(rows.nth(i)).to_contain_text(layer["digest"])
    config = page.locator("#oci-config")
    expect(config).to_contain_text("/bin/hello")
    expect(config).to_contain_text("PATH=/bin")
    expect(config).to_contain_text("/srv")
    expect(page.locator("tr[data-image=ui-oci]")).to_be_visible()
    check_page(page, "images-oci")


def test_app_container_through_the_wizard(fake_daemon: Daemon, oci_image: str, page: Page) -> None:
    """The container kind offers the OCI image and its mode/env/command fields (hidden for
    VMs); the review shows them with the boot policy; the created spec has them."""
    d = fake_daemon
    login(page, d.url, "admin", ADMIN_PASSWORD)
    page.get_by_role("link", name="Instances", exact=True).click()
    page.get_by_role("button", name="Create instance").click()
    dialog = page.locator("dialog")
    expect(dialog.get_by_label("Container mode")).to_be_hidden()
    dialog.get_by_label("Container from a container image").check()
    expect(dialog.get_by_label("Source")).to_have_value(oci_image)
    dialog.get_by_label("Name", exact=True).fill("ct-app")
    dialog.get_by_role("button", name="Next").click()
    dialog.get_by_role("button", name="Next").click()
    dialog.get_by_label("Start when the host boots").check()
    dialog.get_by_label("Start order").fill("2")
    dialog.get_by_label("Start delay (s)").fill("1.5")
    dialog.get_by_role("button", name="Next").click()
    dialog.get_by_label("Container mode").select_option("app")
    dialog.get_by_label("Environment").fill("GREETING=hi there\nDEBUG=1\n")
    dialog.get_by_label("Command").fill("/bin/hello  --loud")
    check_page(page, "wizard-container-process")
    dialog.get_by_role("button", name="Next").click()
    head, body = dialog.locator("#wiz-request").inner_text().split("\n", 1)
    assert head == "POST /1.0/instances"
    assert json.loads(body) == {
        "name": "ct-app", "kind": "container", "image": oci_image, "vcpus": 1,
        "memory_mib": 256, "container_mode": "app", "env": ["GREETING=hi there", "DEBUG=1"],
        "cmd": ["/bin/hello", "--loud"], "autostart": True, "start_order": 2,
        "start_delay_s": 1.5, "nics": [], "start": True,
    }  # fmt: skip
    dialog.get_by_role("button", name="Create").click()
    expect(page.locator(".instance-head [data-power]")).to_have_text("running", timeout=30_000)
    with admin_http(d) as http:
        spec = _spec(http, "ct-app")
    assert (spec["container_mode"], spec["env"], spec["cmd"]) == (
        "app",
        ["GREETING=hi there", "DEBUG=1"],
        ["/bin/hello", "--loud"],
    )
    assert (spec["autostart"], spec["start_order"], spec["start_delay_s"]) == (True, 2, 1.5)


def test_vm_boot_policy_in_the_wizard(fake_daemon: Daemon, vm_image: str, page: Page) -> None:
    """A VM's review request carries the boot policy and no container fields; a bulk
    deploy from a template offers no boot policy (clones take none)."""
    login(page, fake_daemon.url, "admin", ADMIN_PASSWORD)
    page.get_by_role("link", name="Instances", exact=True).click()
    page.get_by_role("button", name="Create instance").click()
    dialog = page.locator("dialog")
    expect(dialog.get_by_label("Source")).to_have_value(vm_image)
    dialog.get_by_label("Name", exact=True).fill("vm-boot")
    dialog.get_by_role("button", name="Next").click()
    dialog.get_by_role("button", name="Next").click()
    dialog.get_by_label("Start when the host boots").check()
    dialog.get_by_label("Start order").fill("1")
    for _ in range(2):
        dialog.get_by_role("button", name="Next").click()
    sent = json.loads(dialog.locator("#wiz-request").inner_text().split("\n", 1)[1])
    assert (sent["kind"], sent["autostart"], sent["start_order"]) == ("vm", True, 1)
    assert not {"start_delay_s", "container_mode", "env", "cmd"} & set(sent)
    for _ in range(4):
        dialog.get_by_role("button", name="Back").click()
    boot = dialog.locator("#wiz-boot")
    dialog.get_by_label("Virtual machines from a template (bulk deploy)").check()
    expect(boot).to_have_attribute("hidden", "")
    dialog.get_by_label("Container from a container image").check()
    expect(boot).not_to_have_attribute("hidden", "")


def test_boot_policy_on_the_settings_tab(
    fake_daemon: Daemon, oci_image: str, vm_image: str, page: Page
) -> None:
    """Autostart and start order saved from the Settings tab reach the spec (PATCH with
    only what changed); the tab shows the new values after the save; a VM's tab also
    sets what a host shutdown does to it (a container's has no such choice)."""
    d = fake_daemon
    with admin_http(d) as http:
        _container(http, "ct-policy", oci_image, start=False)
        assert _spec(http, "ct-policy")["autostart"] is False
    login(page, d.url, "admin", ADMIN_PASSWORD)
    page.goto(f"{d.url}/#/instances/ct-policy/settings")
    page.get_by_label("Start when the host boots").check()
    page.get_by_label("Start order (lowest first)").fill("5")
    page.get_by_role("button", name="Save boot policy").click()
    expect(page.locator("#policy-status")).to_have_text("Boot policy saved.", timeout=15_000)
    expect(page.locator("#boot-policy")).to_contain_text("yes")
    with admin_http(d) as http:
        spec = _spec(http, "ct-policy")
    assert (spec["autostart"], spec["start_order"], spec["start_delay_s"]) == (True, 5, 0.0)
    expect(page.get_by_label("At host shutdown")).to_have_count(0)
    check_page(page, "instance-settings")
    with admin_http(d) as http:
        wait_op(http, http.post("/1.0/instances", json={"name": "vm-policy", "image": vm_image}))
    page.goto(f"{d.url}/#/instances/vm-policy/settings")
    expect(page.get_by_label("At host shutdown")).to_be_visible()  # vm-policy's form is drawn
    page.get_by_label("Start delay (s)").fill("12.5")
    page.get_by_label("At host shutdown").select_option("suspend")
    page.get_by_role("button", name="Save boot policy").click()
    expect(page.locator("#policy-status")).to_have_text("Boot policy saved.", timeout=15_000)
    with admin_http(d) as http:
        spec = _spec(http, "vm-policy")
    assert (spec["autostart"], spec["start_delay_s"], spec["host_shutdown"]) == (
        False, 12.5, "suspend"
    )  # fmt: skip


def test_a_page_still_loading_never_shows_the_last_one(
    fake_daemon: Daemon, oci_image: str, page: Page
) -> None:
    """Moving from one instance to another whose record is slow to arrive shows
    "Loading…", not the first instance's form (a fill there once saved the wrong VM's
    policy); the late answer then draws the second instance."""
    d = fake_daemon
    with admin_http(d) as http:
        _container(http, "ct-first", oci_image, start=False)
        _container(http, "ct-second", oci_image, start=False)
    login(page, d.url, "admin", ADMIN_PASSWORD)
    page.goto(f"{d.url}/#/instances/ct-first/settings")
    expect(page.get_by_label("Start order (lowest first)")).to_be_visible()
    held: list[Route] = []
    page.route("**/1.0/instances/ct-second", lambda route: held.append(route))
    with page.expect_request("**/1.0/instances/ct-second"):
        page.evaluate("location.hash = '#/instances/ct-second/settings'")
    expect(page.get_by_role("status").filter(has_text="Loading…")).to_be_visible()
    expect(page.get_by_label("Start order (lowest first)")).to_have_count(0)
    assert len(held) == 1
    held[0].continue_()
    expect(page.locator(".crumbs")).to_contain_text("ct-second")
    expect(page.get_by_label("Start order (lowest first)")).to_be_visible()


def test_the_instance_page_shows_an_apps_exit_code(
    fake_daemon: Daemon, oci_image: str, page: Page
) -> None:
    """An application container that exited with 3 (its status as the agent writes it,
    served in place of the fake driver's) shows "Exit code 3" on its summary; a running
    one (no code) shows no such fact."""
    d = fake_daemon
    with admin_http(d) as http:
        _container(http, "ct-exit", oci_image, start=True)

    def crashed(route: Route) -> None:
        body = route.fetch().json()
        body["status"].update(power="crashed", exit_code=3, pid=None)
        route.fulfill(json=body)

    login(page, d.url, "admin", ADMIN_PASSWORD)
    page.goto(f"{d.url}/#/instances/ct-exit")
    expect(page.locator(".instance-head [data-power]")).to_have_text("running")
    expect(page.locator("dl.facts dt", has_text="Exit code")).to_have_count(0)
    page.route("**/1.0/instances/ct-exit", crashed)
    page.reload()
    expect(page.locator(".instance-head [data-power]")).to_have_text("crashed")
    fact = page.locator("dl.facts dt", has_text="Exit code")
    expect(fact).to_have_count(1)
    expect(fact.locator("xpath=following-sibling::dd[1]")).to_have_text("3")


def test_boot_report_and_shutting_guests_down(
    fake_daemon: Daemon, oci_image: str, page: Page
) -> None:
    """The dashboard shows the last boot's report; "Shut down guests" asks first (Cancel
    changes nothing), then stops the running container and lists it."""
    d = fake_daemon
    with admin_http(d) as http:
        _container(http, "ct-run", oci_image, start=True)
        boot_id = http.get("/1.0/host/boot-report").json()["boot_id"]
    login(page, d.url, "admin", ADMIN_PASSWORD)
    card = page.locator("#card-boot-and-shutdown-section")
    expect(card).to_contain_text(boot_id)
    card.get_by_label("Seconds per guest before it is forced off").fill("5")
    card.get_by_role("button", name="Shut down guests").click()
    page.locator("#dialog").get_by_role("button", name="Cancel").click()
    with admin_http(d) as http:
        assert http.get("/1.0/instances/ct-run").json()["status"]["power"] == "running"
    card.get_by_role("button", name="Shut down guests").click()
    page.locator("#dialog").get_by_role("button", name="Shut down guests").click()
    expect(page.locator("#shutdown-result")).to_contain_text("ct-run: stopped", timeout=30_000)
    with admin_http(d) as http:
        assert http.get("/1.0/instances/ct-run").json()["status"]["power"] == "stopped"
    check_page(page, "dashboard-boot")


def test_viewer_sees_no_new_mutating_control(
    fake_daemon: Daemon, oci_image: str, page: Page
) -> None:
    """A viewer sees the boot report, an image's layers and an instance's boot policy, but
    no import form, no policy form and no shutdown action; forging them is refused."""
    d = fake_daemon
    with admin_http(d) as http:
        _container(http, "ct-ro", oci_image, start=False)
    login(page, d.url, VIEWER, VIEWER_PW)
    expect(page.locator("#boot-report")).to_contain_text("Host boot id")
    expect(page.locator("#shutdown-guests")).to_have_count(0)
    page.get_by_role("link", name="Images").click()
    page.locator(f"[data-details={oci_image}]").click()
    expect(page.locator("#oci-layers tbody tr")).to_have_count(2)
    expect(page.locator("#oci-import")).to_have_count(0)
    check_page(page, "images-viewer")
    page.goto(f"{d.url}/#/instances/ct-ro/settings")
    expect(page.locator("#boot-policy")).to_contain_text("Start order")
    expect(page.locator("#policy-form")).to_have_count(0)
    expect(page.locator("main button[type=submit]")).to_have_count(0)
    forged: list[int] = page.evaluate(
        """async () => {
          const csrf = document.cookie.split('; ').find(c => c.startsWith('vf_csrf=')).slice(8);
          const send = async (method, path, body) => (await fetch(path, {method,
            body: JSON.stringify(body),
            headers: {'Content-Type': 'application/json', 'X-CSRF-Token': csrf}})).status;
          return [await send('PATCH', '/1.0/instances/ct-ro', {autostart: true}),
                  await send('POST', '/1.0/host/shutdown-guests', {timeout_s: 1}),
                  await send('POST', '/1.0/images/import-oci', {name: 'x', path: 'app-layout'})];
        }"""
    )
    assert forged == [403, 403, 403]
    with admin_http(d) as http:
        assert _spec(http, "ct-ro")["autostart"] is False
