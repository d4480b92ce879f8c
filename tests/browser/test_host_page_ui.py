"""The web UI for what an admin of one host does beyond instances, in headless Chromium
against a fake-driver daemon (no guest boots): the Host page (facts, every check,
capacity and overcommit, disk directories); kept disks (a delete that keeps them, then
deleted or attached to a new instance from the Host page); building an image; importing
a disk image and an OVA package and exporting an image, a VM as an OVA and one VM disk;
and a viewer who sees none of these controls and whose forged requests are refused."""

from __future__ import annotations

import re
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.integration.conftest import Daemon

from .conftest import ADMIN_PASSWORD, PATTERN, admin_http, fake_ui_daemon, raw_disk, started_vm
from .pagecheck import check_page
from .test_ui import OP_MS, login

pytestmark = pytest.mark.integration

VIEWER, VIEWER_PW = "vera", "viewer-pass-456"


@pytest.fixture(scope="module")
def fake_daemon() -> Iterator[Daemon]:
    yield from fake_ui_daemon("vfhostpage", (VIEWER, VIEWER_PW))


def _content(path: Path, fmt: str) -> bytes:
    """The first MiB of the guest-visible content of disk ``path`` (any format)."""
    with tempfile.NamedTemporaryFile(dir="/tmp") as out:
        subprocess.run(
            ["qemu-img", "convert", "-f", fmt, "-O", "raw", str(path), out.name], check=True
        )
        return Path(out.name).read_bytes()[: len(PATTERN)]


def _format(path: Path) -> str:
    out = subprocess.run(["qemu-img", "info", str(path)], capture_output=True, text=True)
    line = next(x for x in out.stdout.splitlines() if x.startswith("file format:"))
    return line.split(":", 1)[1].strip()


def test_host_page_shows_facts_every_check_and_capacity(
    fake_daemon: Daemon, pattern_image: str, page: Page
) -> None:
    """The Host page shows the probed facts, every check of ``host check`` with its
    recommendation, and capacity as the API reports it (allocated vs the overcommit limits,
    counting a running 2-vCPU VM)."""
    d = fake_daemon
    started_vm(d, "cap-vm", pattern_image, stop=False, vcpus=2, memory_mib=512)
    login(page, d.url, "admin", ADMIN_PASSWORD)
    page.get_by_role("link", name="Host", exact=True).click()
    with admin_http(d) as http:
        host = http.get("/1.0/host").json()
        checks = http.get("/1.0/host/check").json()
        cap = http.get("/1.0/host/capacity").json()
    facts = page.locator("#host-facts")
    expect(facts.locator("[data-fact=CPUs]")).to_have_text(str(host["cpus"]))
    expect(facts.locator("[data-fact=QEMU]")).to_contain_text(host["qemu_version"])
    expect(facts.locator("[data-fact='Boot id']")).to_have_text(host["boot_id"])
    rows = page.locator("#checks-table tbody tr")
    expect(rows).to_have_count(len(checks))
    for c in checks:
        expect(page.locator(f"#checks-table tr[data-check='{c['name']}']")).to_contain_text(
            c["level"]
        )
    expect(page.locator("#host-recommendation")).to_have_text(host["recommendation"])
    assert cap["allocated_vcpus"] >= 2
    vcpus = page.locator("[data-meter='vCPUs allocated']")
    expect(vcpus).to_contain_text(f"{cap['allocated_vcpus']} of {cap['vcpus_limit']}")
    ratio = f"{cap['ratios']['cpu']:g}"  # as JavaScript prints a number
    expect(vcpus).to_contain_text(f"{cap['cpus']} CPUs \u00d7 {ratio}")
    expect(vcpus).to_contain_text(f"{cap['available_vcpus']} available")
    expect(page.locator("#capacity-facts [data-fact='CPU overcommit']")).to_have_text(
        f"{ratio} vCPUs per host CPU"
    )
    expect(page.locator("#disks-table tr[data-disk=cap-vm]")).to_contain_text("its instance")
    check_page(page, "host")


def test_kept_disks_are_listed_deleted_and_reused(
    fake_daemon: Daemon, pattern_image: str, page: Page
) -> None:
    """A delete with "Also delete its disks" unticked keeps them: the Host page lists them
    as kept; one set is deleted from there; creating the other name without reusing them
    is refused with a pointer to the option, and with it the VM gets the very same file."""
    d = fake_daemon
    for name in ("keep-a", "keep-b"):
        started_vm(d, name, pattern_image)
    disks = d.data_dir / "disks"
    inode = (disks / "keep-a" / "root.qcow2").stat().st_ino
    login(page, d.url, "admin", ADMIN_PASSWORD)
    for name in ("keep-a", "keep-b"):
        page.goto(f"{d.url}/#/instances/{name}")
        page.locator(".instance-head").get_by_role("button", name="Delete", exact=True).click()
        dialog = page.locator("#dialog")
        dialog.get_by_label("Also delete its disks").uncheck()
        dialog.get_by_role("button", name="Delete").click()
        expect(page.get_by_role("heading", name="Instances")).to_be_visible(timeout=OP_MS)
    assert (disks / "keep-a" / "root.qcow2").stat().st_ino == inode

    page.get_by_role("link", name="Host", exact=True).click()
    page.get_by_label("Only kept disks (from deleted instances)").check()
    rows = page.locator("#disks-table tbody tr")
    expect(rows).to_have_count(2)
    expect(page.locator("#disks-table tr[data-disk=keep-b]")).to_contain_text("root.qcow2")
    page.get_by_role("button", name="Delete the kept disks of keep-b").click()
    page.locator("#dialog").get_by_role("button", name="Delete disks").click()
    expect(page.get_by_role("status").filter(has_text="deleted")).to_have_text(
        "Kept disks of keep-b deleted."
    )
    expect(rows).to_have_count(1)
    assert not (disks / "keep-b").exists()

    page.get_by_role("button", name="Create an instance on the kept disks of keep-a").click()
    wizard = page.locator("dialog")
    expect(wizard.get_by_label("Name", exact=True)).to_have_value("keep-a")
    reuse = wizard.get_by_label("Attach the disks kept from a deleted instance of this name")
    expect(reuse).to_be_checked()
    reuse.uncheck()
    wizard.get_by_label("Source").select_option(pattern_image)
    for _ in range(4):
        wizard.get_by_role("button", name="Next").click()
    wizard.get_by_role("button", name="Create").click()
    refused = wizard.get_by_role("alert")
    expect(refused).to_contain_text("[kept_disks]")
    expect(refused).to_contain_text('tick "Attach the disks kept…" in step 1')
    for _ in range(4):
        wizard.get_by_role("button", name="Back").click()
    reuse.check()
    for _ in range(4):
        wizard.get_by_role("button", name="Next").click()
    expect(wizard.locator("#wiz-request")).to_contain_text('"reuse_disks": true')
    wizard.get_by_role("button", name="Create").click()
    expect(page.locator(".instance-head [data-power]")).to_have_text("running", timeout=OP_MS)
    assert (disks / "keep-a" / "root.qcow2").stat().st_ino == inode


def test_build_an_image_from_the_images_page(fake_daemon: Daemon, page: Page) -> None:
    """Building ``tiny`` under a new name is tracked as a task and lists the image; the
    same name again is refused with its code unless "Rebuild" is ticked."""
    d = fake_daemon
    login(page, d.url, "admin", ADMIN_PASSWORD)
    page.get_by_role("link", name="Images").click()
    page.get_by_label("Name for the built image").fill("built-tiny")
    page.get_by_label("Builder").select_option("tiny")
    page.get_by_role("button", name="Build", exact=True).click()
    expect(page.locator("#image-build-status")).to_have_text("Built built-tiny.", timeout=OP_MS)
    expect(page.locator("#tasks [data-status=success]").first).to_contain_text("built-tiny")
    expect(page.locator("tr[data-image=built-tiny]")).to_contain_text("tiny")
    page.get_by_role("button", name="Build", exact=True).click()
    expect(page.locator("p.notice-error[role=alert]")).to_contain_text("[", timeout=OP_MS)
    expect(page.locator("#image-build-status")).to_have_text("")
    page.get_by_label("Rebuild if it exists").check()
    page.get_by_role("button", name="Build", exact=True).click()
    expect(page.locator("#image-build-status")).to_have_text("Built built-tiny.", timeout=OP_MS)


def test_import_a_disk_image_and_export_it(fake_daemon: Daemon, page: Page) -> None:
    """A VMDK in the import directory is imported (a path outside it refused, nothing made);
    exported again as raw, the file in the export directory has the same content; an
    existing file is never overwritten."""
    d = fake_daemon
    raw = raw_disk(Path(tempfile.mkdtemp(prefix="vfraw", dir="/tmp")) / "src.raw")
    vmdk = d.data_dir / "import" / "legacy.vmdk"
    subprocess.run(["qemu-img", "convert", "-O", "vmdk", str(raw), str(vmdk)], check=True)
    shutil.rmtree(raw.parent)
    login(page, d.url, "admin", ADMIN_PASSWORD)
    page.get_by_role("link", name="Images").click()
    page.get_by_label("Name for the imported disk").fill("legacy")
    page.get_by_label("Disk file on the host").fill("/etc/hostname")
    page.get_by_role("button", name="Import disk").click()
    expect(page.get_by_role("alert")).to_contain_text("[path_not_allowed]", timeout=OP_MS)
    with admin_http(d) as http:
        assert http.get("/1.0/images/legacy").status_code == 404
    page.get_by_label("Disk file on the host").fill("legacy.vmdk")
    page.get_by_role("button", name="Import disk").click()
    expect(page.locator("#disk-import-status")).to_contain_text("Imported legacy", timeout=OP_MS)
    expect(page.locator("#disk-import-status")).to_contain_text("vmdk")
    expect(page.locator("#tasks [data-status=success]").first).to_contain_text("legacy")

    page.get_by_role("button", name="Export legacy").click()
    dialog = page.locator("#dialog")
    dialog.get_by_label("Format").select_option("raw")
    expect(dialog.get_by_label("New file on the host")).to_have_value("legacy.raw")
    dialog.get_by_role("button", name="Export").click()
    done = page.locator("#images-done")
    expect(done).to_contain_text("Exported legacy as raw to", timeout=OP_MS)
    exported = d.data_dir / "export" / "legacy.raw"
    assert _format(exported) == "raw"
    assert _content(exported, "raw") == PATTERN
    check_page(page, "images-transfer")

    page.get_by_role("button", name="Export legacy").click()
    dialog.get_by_label("Format").select_option("raw")
    dialog.get_by_role("button", name="Export").click()
    expect(page.locator("p.notice-error[role=alert]")).to_contain_text("[", timeout=OP_MS)
    assert _content(exported, "raw") == PATTERN


def test_export_a_vm_as_ova_and_a_disk_then_import_the_ova(
    fake_daemon: Daemon, pattern_image: str, page: Page
) -> None:
    """Export is offered only once the VM is stopped; the OVA lands in the export directory
    (OVF + disk), one disk as vmdk carries the data; the OVA imported from the Images page
    makes a VM of the chosen name with its images."""
    d = fake_daemon
    started_vm(d, "ova-src", pattern_image, stop=False)
    login(page, d.url, "admin", ADMIN_PASSWORD)
    page.goto(f"{d.url}/#/instances/ova-src")
    export = page.get_by_role("button", name="Export…")
    expect(export).to_be_disabled()
    # A refresh changes the head's buttons in place: one replaced under the pointer between
    # mouse-down and mouse-up loses the click (CI once lost the second Export click so).
    page.evaluate("() => { window.exportButton = document.getElementById('export-vm'); }")
    page.locator(".instance-head").get_by_role("button", name="Force stop").click()
    page.locator("#dialog").get_by_role("button", name="Force stop").click()
    expect(export).to_be_enabled(timeout=OP_MS)
    assert page.evaluate("() => window.exportButton === document.getElementById('export-vm')")

    export.click()
    dialog = page.locator("#dialog")
    expect(dialog.get_by_label("Disk format")).to_be_hidden()
    expect(dialog.get_by_label("New file on the host")).to_have_value("ova-src.ova")
    dialog.get_by_role("button", name="Export").click()
    done = page.locator("#instance-done")
    expect(done).to_contain_text("Exported ova-src as an OVA package to", timeout=OP_MS)
    ova = d.data_dir / "export" / "ova-src.ova"
    with tarfile.open(ova) as tar:
        names = tar.getnames()
    assert names[0].endswith(".ovf") and any(n.endswith(".vmdk") for n in names), names

    export.click()
    dialog.get_by_label("What").select_option("disk:root")
    dialog.get_by_label("Disk format").select_option("vmdk")
    expect(dialog.get_by_label("New file on the host")).to_have_value("ova-src-root.vmdk")
    check_page(page, "instance-export")
    dialog.get_by_role("button", name="Export").click()
    expect(done).to_contain_text("Exported disk root of ova-src as vmdk", timeout=OP_MS)
    disk = d.data_dir / "export" / "ova-src-root.vmdk"
    assert _format(disk) == "vmdk"
    assert _content(disk, "vmdk") == PATTERN

    shutil.copy(ova, d.data_dir / "import" / "moved.ova")
    page.get_by_role("link", name="Images").click()
    page.get_by_label("OVA file on the host").fill("moved.ova")
    page.get_by_label("VM name (optional)").fill("ova-copy")
    page.get_by_role("button", name="Import OVA").click()
    status = page.locator("#ova-import-status")
    expect(status).to_contain_text("Imported VM ova-copy with images", timeout=OP_MS)
    with admin_http(d) as http:
        spec = http.get("/1.0/instances/ova-copy").json()["spec"]
        images = {i["name"] for i in http.get("/1.0/images").json()}
    assert [disk["image"] for disk in spec["disks"]] == ["ova-copy-disk0"]
    assert "ova-copy-disk0" in images
    expect(status).to_contain_text("ova-copy-disk0")
    status.get_by_role("link", name="ova-copy").click()
    expect(page.locator(".crumbs")).to_contain_text("ova-copy")


def test_viewer_sees_no_host_or_transfer_control(
    fake_daemon: Daemon, pattern_image: str, page: Page
) -> None:
    """A viewer sees the Host page and the images, but no kept-disk actions, no build,
    import or export controls; forging those requests is refused."""
    d = fake_daemon
    started_vm(d, "ro-kept", pattern_image)
    op = d.client.delete_instance("ro-kept", force=True, disks=False)
    assert d.client.wait_operation(op.id, timeout_s=60).status == "success"
    started_vm(d, "ro-vm", pattern_image)
    login(page, d.url, VIEWER, VIEWER_PW)
    page.get_by_role("link", name="Host", exact=True).click()
    expect(page.locator("#disks-table tr[data-disk=ro-kept]")).to_contain_text("kept")
    expect(page.locator("#host-disks button")).to_have_count(0)
    check_page(page, "host-viewer")
    page.get_by_role("link", name="Images").click()
    expect(page.locator("tr[data-image=small]")).to_be_visible()
    for form in ("#image-build", "#disk-import", "#ova-import", "[data-export]"):
        expect(page.locator(form)).to_have_count(0)
    page.goto(f"{d.url}/#/instances/ro-vm")
    expect(page.locator(".crumbs")).to_contain_text("ro-vm")
    expect(page.locator("#export-vm")).to_have_count(0)
    forged: list[int] = page.evaluate(
        """async () => {
          const csrf = document.cookie.split('; ').find(c => c.startsWith('vf_csrf=')).slice(8);
          const send = async (method, path, body) => (await fetch(path, {method,
            body: body && JSON.stringify(body),
            headers: {'Content-Type': 'application/json', 'X-CSRF-Token': csrf}})).status;
          return [await send('DELETE', '/1.0/disks/ro-kept'),
                  await send('POST', '/1.0/images', {name: 'x', builder: 'tiny'}),
                  await send('POST', '/1.0/images/import', {name: 'x', path: 'small.raw'}),
                  await send('POST', '/1.0/ova/import', {path: 'x.ova'}),
                  await send('POST', '/1.0/images/small/export', {path: 'x.qcow2'}),
                  await send('POST', '/1.0/instances/ro-vm/export-ova', {path: 'x.ova'})];
        }"""
    )
    assert forged == [403] * 6
    assert (d.data_dir / "disks" / "ro-kept").is_dir()


def test_cancel_a_running_operation_from_the_tasks_panel_and_the_operations_page(
    ui_daemon: Daemon, page: Page
) -> None:
    """A clean stop of a paused real VM waits for a guest that cannot answer (its CPUs are
    stopped); the Tasks panel's Cancel ends it at once: the task and the operation say
    cancelled, and the VM is paused again, as before the stop. A second such stop is
    cancelled from the Operations page (Administration), whose row then says cancelled
    with its code."""
    d = ui_daemon
    d.create("slow-stop", start=True)
    d.action("slow-stop", "pause")
    try:
        login(page, d.url, "admin", ADMIN_PASSWORD)
        page.goto(f"{d.url}/#/instances/slow-stop")
        page.locator(".instance-head").get_by_role("button", name="Stop", exact=True).click()
        task = page.locator("#tasks li.task", has_text="slow-stop").first
        expect(task).to_have_attribute("data-status", "running", timeout=OP_MS)
        task.get_by_role("button", name=re.compile("^Cancel ")).click()
        expect(task).to_have_attribute("data-status", "cancelled")
        expect(task.get_by_role("button")).to_have_count(0)
        op_id = task.get_attribute("data-op")
        with admin_http(d) as http:
            op = http.get(f"/1.0/operations/{op_id}").json()
        assert (op["kind"], op["status"], op["error_code"]) == (
            "instance.stop", "cancelled", "cancelled"
        )  # fmt: skip
        head = page.locator(".instance-head")
        expect(head.get_by_role("button", name="Resume")).to_be_enabled(timeout=OP_MS)
        status = d.client.get_instance("slow-stop").status
        assert (status.power, status.reason) == ("paused", "stop cancelled"), status

        head.get_by_role("button", name="Stop", exact=True).click()
        page.get_by_role("link", name="Administration").click()
        page.get_by_role("link", name="Operations").click()
        running = page.locator("#operations-table tr[data-status=running]", has_text="slow-stop")
        expect(running).to_have_count(1, timeout=OP_MS)
        again = running.get_attribute("data-op")
        running.get_by_role("button", name=f"Cancel operation {again}").click()
        row = page.locator(f"#operations-table tr[data-op='{again}']")
        expect(row).to_have_attribute("data-status", "cancelled")
        expect(row).to_contain_text("[cancelled]")
        with admin_http(d) as http:
            assert http.get(f"/1.0/operations/{again}").json()["status"] == "cancelled"
    finally:
        op = d.client.delete_instance("slow-stop", force=True, disks=True)
        d.client.wait_operation(op.id, timeout_s=120)
