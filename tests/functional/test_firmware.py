"""Per-VM firmware through the API (fake driver, real agent and disk manager): UEFI VMs get
their own variable store from the right OVMF template, kept with their disks; what cannot
run is refused with a stable code and leaves nothing behind."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from virtfleet.app.bootstrap import Platform
from virtfleet.drivers.qemu.firmware import OVMF_DIR

from .helpers import act, assert_error, create, snapshot, wait_op

pytestmark = pytest.mark.skipif(
    not (OVMF_DIR / "OVMF_VARS_4M.ms.fd").is_file(), reason="Debian's ovmf is not installed"
)


def _store(platform: Platform, name: str, mode: str) -> Path:
    return platform.settings.disks_dir / name / f"{mode}.vars.fd"


async def test_secure_boot_vm_gets_its_own_microsoft_enrolled_store(
    api: httpx.AsyncClient, image: str, platform: Platform
) -> None:
    """uefi-secure: the VM's store starts as the Microsoft-enrolled template, lives with its
    disks (private to root) and is kept, not re-copied, across a restart."""
    await create(api, "sb", start=True, firmware="uefi-secure")
    store = _store(platform, "sb", "uefi-secure")
    assert store.read_bytes() == (OVMF_DIR / "OVMF_VARS_4M.ms.fd").read_bytes()
    assert store.stat().st_mode & 0o777 == 0o600
    store.write_bytes(b"changed by the guest")  # e.g. a new boot order
    assert (await act(api, "sb", "restart"))["status"] == "success"
    assert store.read_bytes() == b"changed by the guest"
    shown = (await api.get("/1.0/instances/sb")).json()["spec"]
    assert shown["firmware"] == "uefi-secure"


async def test_plain_uefi_uses_the_empty_template_and_bios_makes_no_store(
    api: httpx.AsyncClient, image: str, platform: Platform
) -> None:
    """uefi: the store without enrolled keys; a BIOS VM (the default) has none."""
    await create(api, "efi", start=True, firmware="uefi")
    store = _store(platform, "efi", "uefi")
    assert store.read_bytes() == (OVMF_DIR / "OVMF_VARS_4M.fd").read_bytes()
    await create(api, "old", start=True)
    assert not list((platform.settings.disks_dir / "old").glob("*.vars.fd"))
    assert (await api.get("/1.0/instances/old")).json()["spec"]["firmware"] == "bios"


async def test_secure_boot_on_the_emulated_model_is_refused_writing_nothing(
    api: httpx.AsyncClient, image: str, platform: Platform
) -> None:
    """uefi-secure needs q35's SMM: on i440fx it is a 400 naming the fix, nothing stored;
    containers take no firmware at all."""
    before = await snapshot(platform.store)
    body = {"name": "legacy", "image": image, "device_model": "emulated"}
    r = await api.post("/1.0/instances", json={**body, "firmware": "uefi-secure"})
    message = assert_error(r, 400, "invalid_input")
    assert "q35" in message and "use firmware uefi" in message
    assert await snapshot(platform.store) == before
    assert not (platform.settings.disks_dir / "legacy").exists()
    box = {"name": "box", "kind": "container", "image": image, "firmware": "uefi"}
    assert "firmware" in assert_error(await api.post("/1.0/instances", json=box), 400,
                                      "invalid_input")  # fmt: skip


async def test_missing_firmware_fails_the_start_with_firmware_missing_leaving_nothing(
    api: httpx.AsyncClient, image: str, platform: Platform, tmp_path: Path
) -> None:
    """Without OVMF on the host a UEFI create+start fails with firmware_missing naming the
    package; the VM, its disk and its directory are gone again."""
    platform.agent.disks.firmware_dir = tmp_path / "no-ovmf"
    body = {"name": "efi", "image": image, "firmware": "uefi", "start": True}
    op = await wait_op(api, await api.post("/1.0/instances", json=body))
    assert op["status"] == "failure" and op["error_code"] == "firmware_missing", op
    assert "'ovmf'" in op["error_message"]
    assert (await api.get("/1.0/instances/efi")).status_code == 404
    assert not (platform.settings.disks_dir / "efi").exists()


async def test_firmware_changes_at_the_next_boot_and_is_checked_like_a_create(
    api: httpx.AsyncClient, image: str, platform: Platform
) -> None:
    """vm set --firmware on a running VM waits for the next boot (then the store is made);
    uefi-secure on an emulated VM is refused as at create."""
    await create(api, "vm", start=True)
    op = await wait_op(api, await api.patch("/1.0/instances/vm", json={"firmware": "uefi"}))
    assert op["status"] == "success", op
    change = op["result"]["changes"][0]
    assert (change["target"], change["mode"], change["new"]) == ("firmware", "next-boot", "uefi")
    assert not _store(platform, "vm", "uefi").exists()
    assert (await act(api, "vm", "restart"))["status"] == "success"
    assert _store(platform, "vm", "uefi").is_file()
    await create(api, "legacy", device_model="emulated")
    r = await api.patch("/1.0/instances/legacy", json={"firmware": "uefi-secure"})
    assert "q35" in assert_error(r, 400, "invalid_input")


async def test_a_template_carries_the_vms_uefi_variables_to_its_clones(
    api: httpx.AsyncClient, image: str, platform: Platform
) -> None:
    """A template made from a UEFI VM keeps that VM's store beside its image (in its
    machine-state directory); each clone
    starts with a copy of it (boot entries, keys); deleting the template removes it."""
    await create(api, "gold", start=True, firmware="uefi")
    assert (await act(api, "gold", "stop"))["status"] == "success"
    _store(platform, "gold", "uefi").write_bytes(b"boot entries of gold")
    body = {"name": "tpl", "instance": "gold"}
    assert (await wait_op(api, await api.post("/1.0/templates", json=body)))["status"] == "success"
    clone = {"names": ["c1"], "start": True}
    op = await wait_op(api, await api.post("/1.0/templates/tpl/instances", json=clone))
    assert op["status"] == "success", op
    assert (await api.get("/1.0/instances/c1")).json()["spec"]["firmware"] == "uefi"
    assert _store(platform, "c1", "uefi").read_bytes() == b"boot entries of gold"
    kept = list(platform.settings.images_dir.glob("tpl.qcow2.machine/*"))
    assert [p.name for p in kept] == ["uefi.vars.fd"]
    op = await wait_op(api, await api.delete("/1.0/instances/c1", params={"force": "true"}))
    assert op["status"] == "success", op
    assert (await api.delete("/1.0/templates/tpl")).status_code in (200, 202, 204)
    assert not kept[0].exists()


async def test_a_tpm_needs_uefi_and_is_a_vm_setting(
    api: httpx.AsyncClient, image: str, platform: Platform
) -> None:
    """--tpm with BIOS is refused naming the fix (the guest could not use it), nothing
    written; with uefi-secure it is part of the spec; vm set adds one for the next boot."""
    before = await snapshot(platform.store)
    r = await api.post("/1.0/instances", json={"name": "t", "image": image, "tpm": True})
    assert "add firmware uefi-secure" in assert_error(r, 400, "invalid_input")
    assert await snapshot(platform.store) == before
    await create(api, "win", firmware="uefi-secure", tpm=True)
    assert (await api.get("/1.0/instances/win")).json()["spec"]["tpm"] is True
    await create(api, "efi", firmware="uefi")
    op = await wait_op(api, await api.patch("/1.0/instances/efi", json={"tpm": True}))
    assert op["status"] == "success" and op["result"]["changes"][0]["target"] == "tpm", op
    r = await api.patch("/1.0/instances/efi", json={"firmware": "bios"})
    assert "TPM" in assert_error(r, 400, "invalid_input")


async def test_windows_vms_get_secure_boot_and_a_tpm_unless_told_otherwise(
    api: httpx.AsyncClient, image: str
) -> None:
    """os windows: a new VM gets uefi-secure and a TPM by default; what the request sets
    wins; a Linux VM keeps BIOS and no TPM."""
    await create(api, "win", os="windows")
    spec = (await api.get("/1.0/instances/win")).json()["spec"]
    assert (spec["os"], spec["firmware"], spec["tpm"]) == ("windows", "uefi-secure", True)
    await create(api, "win-plain", os="windows", firmware="uefi", tpm=False)
    spec = (await api.get("/1.0/instances/win-plain")).json()["spec"]
    assert (spec["firmware"], spec["tpm"]) == ("uefi", False)
    await create(api, "tux")
    spec = (await api.get("/1.0/instances/tux")).json()["spec"]
    assert (spec["os"], spec["firmware"], spec["tpm"]) == ("linux", "bios", False)


async def test_the_os_of_a_stopped_vm_can_change_and_a_running_one_refuses(
    api: httpx.AsyncClient, image: str, platform: Platform
) -> None:
    """vm set --os: a stopped VM takes the new OS (its firmware and TPM stay as they are:
    those defaults are a new VM's); a running one refuses with invalid_state, unchanged."""
    await create(api, "vm")
    op = await wait_op(api, await api.patch("/1.0/instances/vm", json={"os": "windows"}))
    assert op["status"] == "success", op
    assert op["result"]["changes"][0]["target"] == "os"
    spec = (await api.get("/1.0/instances/vm")).json()["spec"]
    assert (spec["os"], spec["firmware"], spec["tpm"]) == ("windows", "bios", False)
    op = await wait_op(api, await api.patch("/1.0/instances/vm", json={"os": "other"}))
    assert op["status"] == "success", op
    assert (await act(api, "vm", "start"))["status"] == "success"
    before = await snapshot(platform.store)
    r = await api.patch("/1.0/instances/vm", json={"os": "linux"})
    assert "stopped to change its os" in assert_error(r, 409, "invalid_state")
    assert await snapshot(platform.store) == before
    assert (await api.get("/1.0/instances/vm")).json()["spec"]["os"] == "other"
