"""A UEFI VM's variable store in its disk directory (host/disks.py): made once from the
firmware's template, never half-copied, saved into and restored from a snapshot."""

from __future__ import annotations

from pathlib import Path

import pytest

from virtfleet.errors import FirmwareMissingError
from virtfleet.host.disks import DiskManager
from virtfleet.model.instance import Firmware, InstanceSpec


def _ovmf(root: Path) -> Path:
    root.mkdir()
    for name in ("OVMF_CODE_4M.fd", "OVMF_CODE_4M.secboot.fd"):
        (root / name).write_bytes(b"code")
    (root / "OVMF_VARS_4M.fd").write_bytes(b"plain vars")
    (root / "OVMF_VARS_4M.ms.fd").write_bytes(b"microsoft keys")
    return root


def _disks(tmp_path: Path) -> DiskManager:
    def no_image(name: str) -> Path:
        raise AssertionError(name)

    return DiskManager(tmp_path / "disks", no_image, firmware_dir=_ovmf(tmp_path / "ovmf"))


async def test_the_store_is_made_once_from_the_mode_template(tmp_path: Path) -> None:
    """First use copies the mode's template (0600, no partial file left); later uses keep
    what the guest wrote; BIOS has none."""
    disks = _disks(tmp_path)
    spec = InstanceSpec(name="vm", firmware=Firmware.UEFI_SECURE)
    uefi, made = await disks.uefi_vars(spec)
    assert uefi is not None and uefi.secure and uefi.code.name == "OVMF_CODE_4M.secboot.fd"
    assert made == [uefi.vars] and uefi.vars.read_bytes() == b"microsoft keys"
    assert uefi.vars.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in disks.dir("vm").iterdir()] == ["uefi-secure.vars.fd"]
    uefi.vars.write_bytes(b"boot order changed")
    again, made = await disks.uefi_vars(spec)
    assert again == uefi and made == [] and uefi.vars.read_bytes() == b"boot order changed"
    assert await disks.uefi_vars(InstanceSpec(name="old")) == (None, [])


async def test_missing_firmware_makes_nothing(tmp_path: Path) -> None:
    """Without the template the start is refused before any file is written."""
    disks = _disks(tmp_path)
    (tmp_path / "ovmf" / "OVMF_VARS_4M.fd").unlink()
    with pytest.raises(FirmwareMissingError):
        await disks.uefi_vars(InstanceSpec(name="vm", firmware=Firmware.UEFI))
    assert not disks.dir("vm").exists()


async def test_a_snapshot_saves_and_restores_every_store(tmp_path: Path) -> None:
    """save_machine copies the stores into the snapshot directory; restore_machine puts them back
    over what was written since."""
    disks = _disks(tmp_path)
    uefi, _ = await disks.uefi_vars(InstanceSpec(name="vm", firmware=Firmware.UEFI))
    assert uefi is not None
    snap = disks.dir("vm") / "snapshots" / "s1"
    disks.save_machine("vm", snap)
    assert (snap / "uefi.vars.fd").read_bytes() == b"plain vars"
    uefi.vars.write_bytes(b"later")
    disks.restore_machine("vm", snap)
    assert uefi.vars.read_bytes() == b"plain vars"
    assert sorted(p.name for p in disks.dir("vm").iterdir()) == ["snapshots", "uefi.vars.fd"]
