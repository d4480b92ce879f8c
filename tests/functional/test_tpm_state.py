"""A VM's TPM state follows it like its UEFI variables (fake driver, real agent, disk
manager, snapshot and backup managers): snapshots (with and without memory) and revert,
backups and both kinds of restore, templates and clones (a new TPM unless kept). swtpm's
own writes are stood in for by writing its state files into ``<disks>/<vm>/tpm``."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from virtfleet.app.bootstrap import Platform
from virtfleet.drivers.qemu.firmware import OVMF_DIR

from .helpers import act, assert_error, create, wait_op

pytestmark = pytest.mark.skipif(
    not (OVMF_DIR / "OVMF_VARS_4M.ms.fd").is_file(), reason="Debian's ovmf is not installed"
)
PERMALL = "tpm2-00.permall"  # swtpm's permanent state (seeds, NV, hierarchies)


def _tpm(platform: Platform, vm: str) -> Path:
    return platform.settings.disks_dir / vm / "tpm"


def _state(platform: Platform, vm: str) -> dict[str, bytes]:
    """The TPM state files of ``vm`` (swtpm's lock file left out, as every copy does)."""
    tpm = _tpm(platform, vm)
    if not tpm.is_dir():
        return {}
    return {p.name: p.read_bytes() for p in tpm.iterdir() if not p.name.startswith(".")}


def _write(platform: Platform, vm: str, permall: bytes, **more: bytes) -> None:
    """As swtpm would: its permanent state (and ``more`` files by name) in the VM's TPM
    directory, beside its lock file."""
    tpm = _tpm(platform, vm)
    tpm.mkdir(exist_ok=True)
    (tpm / ".lock").write_bytes(b"")
    for name, data in {PERMALL: permall, **more}.items():
        (tpm / name).write_bytes(data)


async def _tpm_vm(api: httpx.AsyncClient, name: str, start: bool = True) -> None:
    await create(api, name, start=start, firmware="uefi", tpm=True)


async def _snap(api: httpx.AsyncClient, vm: str, snap: str, memory: bool = False) -> None:
    body = {"name": snap, "memory": memory}
    op = await wait_op(api, await api.post(f"/1.0/instances/{vm}/snapshots", json=body))
    assert op["status"] == "success", op


async def _revert(api: httpx.AsyncClient, vm: str, snap: str) -> None:
    op = await wait_op(api, await api.post(f"/1.0/instances/{vm}/snapshots/{snap}/revert"))
    assert op["status"] == "success", op


async def test_a_snapshot_keeps_the_tpm_and_revert_brings_back_exactly_that_state(
    api: httpx.AsyncClient, image: str, platform: Platform
) -> None:
    """Disk-only and memory snapshots of a running TPM VM save its TPM state beside the
    UEFI variables; a revert puts back exactly the snapshot's state (files written since,
    e.g. a volatile state, are gone), private to root until swtpm's next start."""
    await _tpm_vm(api, "vm")
    _write(platform, "vm", b"seeds A")
    await _snap(api, "vm", "disk")
    _write(platform, "vm", b"seeds B")
    await _snap(api, "vm", "mem", memory=True)
    saved = platform.settings.disks_dir / "vm" / "snapshots" / "mem" / "tpm" / PERMALL
    assert saved.read_bytes() == b"seeds B"
    assert not (saved.parent / ".lock").exists()  # swtpm's lock is no state
    _write(platform, "vm", b"seeds C", **{"tpm2-00.volatilestate": b"v"})
    await _revert(api, "vm", "disk")
    assert _state(platform, "vm") == {PERMALL: b"seeds A"}
    assert (_tpm(platform, "vm") / PERMALL).stat().st_mode & 0o777 == 0o600
    await _revert(api, "vm", "mem")
    assert _state(platform, "vm") == {PERMALL: b"seeds B"}
    power = (await api.get("/1.0/instances/vm")).json()["status"]["power"]
    assert power == "running"


async def test_a_snapshot_of_a_vm_without_tpm_state_leaves_a_later_tpm_alone(
    api: httpx.AsyncClient, image: str, platform: Platform
) -> None:
    """A snapshot taken before the TPM had any state (an older snapshot) holds none: the
    revert keeps the TPM the VM has rather than destroying its keys."""
    await _tpm_vm(api, "vm", start=False)
    assert (await act(api, "vm", "start"))["status"] == "success"
    await _snap(api, "vm", "early")
    _write(platform, "vm", b"made later")
    await _revert(api, "vm", "early")
    assert _state(platform, "vm") == {PERMALL: b"made later"}


async def test_a_backup_keeps_the_tpm_for_both_kinds_of_restore(
    api: httpx.AsyncClient, image: str, platform: Platform
) -> None:
    """A backup stores the TPM state with the disks and UEFI variables; a restore over the
    VM puts it back, a restore to a new VM gives that VM the same TPM."""
    await _tpm_vm(api, "vm")
    assert (await act(api, "vm", "stop", force=True))["status"] == "success"
    _write(platform, "vm", b"the machine's TPM")
    op = await wait_op(api, await api.post("/1.0/backups", json={"instance": "vm"}))
    assert op["status"] == "success", op
    backup = op["result"]["id"]
    info = (await api.get(f"/1.0/backups/{backup}")).json()
    _write(platform, "vm", b"changed since")
    op = await wait_op(api, await api.post(f"/1.0/backups/{backup}/restore", json={}))
    assert op["status"] == "success", op
    assert _state(platform, "vm") == {PERMALL: b"the machine's TPM"}
    body = {"target": "vm2"}
    op = await wait_op(api, await api.post(f"/1.0/backups/{backup}/restore", json=body))
    assert op["status"] == "success", op
    assert _state(platform, "vm2") == {PERMALL: b"the machine's TPM"}
    assert info["instance"] == "vm"


async def test_a_clone_gets_a_new_tpm_unless_asked_to_keep_the_templates(
    api: httpx.AsyncClient, image: str, platform: Platform
) -> None:
    """A template made from a TPM VM keeps its TPM state with its UEFI variables; a clone
    starts with no TPM state (swtpm makes a new TPM: new seeds, new EK) unless keep_tpm;
    deleting the template removes its machine state."""
    await _tpm_vm(api, "gold")
    assert (await act(api, "gold", "stop"))["status"] == "success"
    _write(platform, "gold", b"gold's identity")
    body = {"name": "tpl", "instance": "gold"}
    assert (await wait_op(api, await api.post("/1.0/templates", json=body)))["status"] == "success"
    for names, keep in ((["fresh"], False), (["kept"], True)):
        clone = {"names": names, "keep_tpm": keep}
        op = await wait_op(api, await api.post("/1.0/templates/tpl/instances", json=clone))
        assert op["status"] == "success", op
    assert _state(platform, "fresh") == {}
    assert _state(platform, "kept") == {PERMALL: b"gold's identity"}
    for vm in ("fresh", "kept"):  # the UEFI variables reach every clone
        assert (platform.settings.disks_dir / vm / "uefi.vars.fd").is_file()
    state = platform.settings.images_dir / "tpl.qcow2.machine"
    assert (state / "tpm" / PERMALL).is_file()
    for vm in ("fresh", "kept"):
        op = await wait_op(api, await api.delete(f"/1.0/instances/{vm}", params={"force": "true"}))
        assert op["status"] == "success", op
    assert (await api.delete("/1.0/templates/tpl")).status_code in (200, 202, 204)
    assert not state.exists()


async def test_keep_tpm_is_a_clone_setting_only(api: httpx.AsyncClient, image: str) -> None:
    """keep_tpm belongs to a clone request; on a plain create it is an unknown field."""
    body = {"name": "x", "image": image, "keep_tpm": True}
    assert_error(await api.post("/1.0/instances", json=body), 400, "invalid_input")
