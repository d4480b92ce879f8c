"""The create wizard for every kind, in headless Chromium against a real daemon: three
linked clones deployed from a template in one go (and booted), and a container made from
a container image whose console then answers."""

from __future__ import annotations

import contextlib
import json

import pytest
from playwright.sync_api import Locator, Page, expect

from tests.integration.conftest import Daemon
from virtfleet.app.settings import Settings
from virtfleet.drivers.oci.driver import cgroup_mounts

from .conftest import ADMIN_PASSWORD, Shots, admin_http, wait_op
from .test_ui import OP_MS, login, power, wait_terminal

pytestmark = pytest.mark.integration


def _open_wizard(page: Page, kind: str) -> Locator:
    page.get_by_role("link", name="Instances", exact=True).click()
    page.get_by_role("button", name="Create instance").click()
    dialog = page.locator("dialog")
    dialog.get_by_label(kind).check()
    return dialog


def _review(dialog: Locator, steps: int) -> tuple[str, dict[str, object]]:
    for _ in range(steps):
        dialog.get_by_role("button", name="Next").click()
    head, body = dialog.locator("#wiz-request").inner_text().split("\n", 1)
    return head, json.loads(body)


def test_bulk_deploy_three_linked_clones_through_the_wizard(
    module_ui_daemon: Daemon, page: Page, shots: Shots
) -> None:
    """Template from tiny; the wizard's template kind with base name + count 3 sends one
    clone request (shown on the review step) and the three clones boot."""
    d = module_ui_daemon
    with admin_http(d) as http:
        wait_op(http, http.post("/1.0/templates", json={"name": "tpl", "image": "tiny"}))
    login(page, d.url, "admin", ADMIN_PASSWORD)
    dialog = _open_wizard(page, "Virtual machines from a template (bulk deploy)")
    expect(dialog.get_by_label("Source")).to_have_value("tpl")
    dialog.get_by_label("Names or pattern").fill("web")
    dialog.get_by_label("Count").fill("3")
    dialog.get_by_label("Linked clones (qcow2 overlays, fast)").check()
    shots.step("wizard-template")
    head, sent = _review(dialog, 4)
    assert head == "POST /1.0/templates/tpl/instances"
    assert sent["names"] == ["web"] and sent["count"] == 3 and sent["clone"] == "linked"
    assert sent["start"] is True and "vcpus" not in sent  # the template's defaults apply
    shots.step("wizard-template-review")
    dialog.get_by_role("button", name="Create").click()
    for name in ("web-1", "web-2", "web-3"):
        expect(page.locator(f"tr[data-name={name}]")).to_be_visible(timeout=OP_MS)
    for name in ("web-1", "web-2", "web-3"):
        d.wait_marker(name)
    for name in ("web-1", "web-2", "web-3"):
        disks = d.client.get_instance(name).spec.disks
        assert disks[0].image == "tpl", f"{name} is not a linked clone of tpl: {disks}"
    expect(page.locator("tr[data-name=web-3] [data-power]")).to_have_text("running")
    for name in ("web-1", "web-2", "web-3"):  # free the CPU for the next test
        op = d.client.delete_instance(name, force=True, disks=True)
        d.client.wait_operation(op.id, timeout_s=120)


def test_firmware_tpm_and_guest_os_from_the_wizard(module_ui_daemon: Daemon, page: Page) -> None:
    """The hardware step's firmware, guest OS and TPM reach the request only when set, and
    the VM made (not started) has them; its Summary tab says so."""
    d = module_ui_daemon
    login(page, d.url, "admin", ADMIN_PASSWORD)
    dialog = _open_wizard(page, "Virtual machine from an image")
    dialog.get_by_label("Name", exact=True).fill("fw-vm")
    _, sent = _review(dialog, 4)
    assert not {"firmware", "tpm", "os"} & set(sent), sent  # the defaults apply
    for _ in range(3):
        dialog.get_by_role("button", name="Back").click()
    dialog.get_by_label("Firmware").select_option("uefi-secure")
    dialog.get_by_label("Guest OS").select_option("windows")
    dialog.get_by_label("Virtual TPM 2.0").check()
    for _ in range(3):
        dialog.get_by_role("button", name="Next").click()
    dialog.get_by_label("Start after create").uncheck()
    sent = json.loads(dialog.locator("#wiz-request").inner_text().split("\n", 1)[1])
    assert (sent["firmware"], sent["os"], sent["tpm"], sent["start"]) == (
        "uefi-secure", "windows", True, False
    )  # fmt: skip
    dialog.get_by_role("button", name="Create").click()
    facts = page.locator("dl.facts")
    expect(facts).to_contain_text("UEFI with Secure Boot · TPM 2.0 · Windows", timeout=OP_MS)
    spec = d.client.get_instance("fw-vm").spec
    assert (spec.firmware, spec.tpm, spec.os) == ("uefi-secure", True, "windows")
    op = d.client.delete_instance("fw-vm", force=True, disks=True)
    d.client.wait_operation(op.id, timeout_s=120)


def test_container_from_the_wizard_and_its_console(
    module_ui_daemon: Daemon, page: Page, shots: Shots
) -> None:
    """The container kind lists only container images, sends kind=container with no VM-only
    fields, and the started container's serial console runs a command."""
    d = module_ui_daemon
    op = d.client.build_image("ctiny", builder="container-tiny")
    assert d.client.wait_operation(op.id, timeout_s=300).status == "success"
    login(page, d.url, "admin", ADMIN_PASSWORD)
    dialog = _open_wizard(page, "Container from a container image")
    expect(dialog.get_by_label("Source").locator("option")).to_have_text(["ctiny"])
    dialog.get_by_label("Name", exact=True).fill("ct-w")
    dialog.get_by_role("button", name="Next").click()
    dialog.get_by_label("Memory (MiB)").fill("128")
    head, sent = _review(dialog, 3)
    assert head == "POST /1.0/instances"
    assert sent == {
        "name": "ct-w",
        "kind": "container",
        "image": "ctiny",
        "vcpus": 1,
        "memory_mib": 128,
        "nics": [],
        "start": True,
    }
    shots.step("wizard-container-review")
    try:
        dialog.get_by_role("button", name="Create").click()
        power(page, "running", timeout=OP_MS)
        expect(page.locator(".instance-head [data-mode]")).to_have_text("Container")
        page.get_by_role("tab", name="Console").click()
        page.locator(".serial-screen").click()
        for _ in range(10):  # the init's shell drops what was typed before it started
            page.keyboard.type("\n")
            page.wait_for_timeout(300)
        page.keyboard.type("echo ct-$((6*7))\n")
        wait_terminal(page, r"ct-42", 30_000)
        shots.step("wizard-container-console")
    finally:
        op = d.client.delete_instance("ct-w", force=True, disks=True)  # containers outlive d
        d.client.wait_operation(op.id, timeout_s=120)
        parent = f"virtfleet-{Settings(data_dir=d.data_dir).instance_id}"
        for mount in cgroup_mounts():
            with contextlib.suppress(OSError):
                (mount / parent).rmdir()
