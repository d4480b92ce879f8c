"""OVF NIC MACs (rasd:Address): written on export, read on import, kept only when asked."""

from __future__ import annotations

from pathlib import Path

from virtfleet.model.instance import Firmware
from virtfleet.service.ova import _spec
from virtfleet.storage import ova


def _roundtrip(tmp_path: Path, macs: list[str | None]) -> ova.OvfSystem:
    disk = tmp_path / "d.vmdk"
    disk.write_bytes(b"\0" * 512)
    system = ova.OvfSystem(
        name="vm", disks=[ova.OvfDisk("disk0", 512)], nics=["VirtIO"] * len(macs), macs=macs
    )
    ova.write_package(tmp_path / "x.ova", system, [disk])
    return ova.read_package(tmp_path / "x.ova")


def test_macs_survive_export_and_import(tmp_path: Path) -> None:
    """An exported MAC comes back from the package; a NIC without one stays without."""
    read = _roundtrip(tmp_path, ["52:54:00:aa:bb:cc", None])
    assert read.macs == ["52:54:00:aa:bb:cc", None]


def test_import_gets_new_macs_unless_asked(tmp_path: Path) -> None:
    """The default import leaves MACs to the platform (new ones); --keep-macs keeps them."""
    read = _roundtrip(tmp_path, ["52:54:00:aa:bb:cc"])
    assert [n.mac for n in _spec("a", read, ["a-disk0"]).nics] == [None]
    assert [n.mac for n in _spec("a", read, ["a-disk0"], True).nics] == ["52:54:00:aa:bb:cc"]


def test_hostile_mac_fields_are_dropped() -> None:
    """A multicast or malformed address is not a MAC the VM can have."""
    assert ova._mac("01:00:5e:00:00:01") is None
    assert ova._mac("52-54-00-AA-BB-CC") == "52:54:00:aa:bb:cc"
    assert ova._mac("52:54:00:aa:bb:cc; rm -rf /") is None


def test_efi_firmware_survives_export_and_import_boots_uefi(tmp_path: Path) -> None:
    """A UEFI VM exports as OVF firmware "efi"; an EFI OVA imports as a UEFI VM (as it ran
    on its old hypervisor), a BIOS one as BIOS."""
    disk = tmp_path / "d.vmdk"
    disk.write_bytes(b"\0" * 512)
    for firmware, expected in (("efi", Firmware.UEFI), ("bios", Firmware.BIOS)):
        system = ova.OvfSystem(name="vm", disks=[ova.OvfDisk("disk0", 512)], firmware=firmware)
        ova.write_package(tmp_path / f"{firmware}.ova", system, [disk])
        read = ova.read_package(tmp_path / f"{firmware}.ova")
        assert read.firmware == firmware
        assert _spec("a", read, ["a-disk0"]).firmware is expected
