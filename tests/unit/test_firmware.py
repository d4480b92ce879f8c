"""Finding OVMF on the host: each UEFI mode's files, and a refusal naming what is missing."""

from __future__ import annotations

from pathlib import Path

import pytest

from virtfleet.drivers.qemu.firmware import available, locate
from virtfleet.errors import FirmwareMissingError
from virtfleet.model.instance import Firmware

FILES = ("OVMF_CODE_4M.fd", "OVMF_VARS_4M.fd", "OVMF_CODE_4M.secboot.fd", "OVMF_VARS_4M.ms.fd")


def _ovmf(root: Path, names: tuple[str, ...] = FILES) -> Path:
    root.mkdir(exist_ok=True)
    for name in names:
        (root / name).write_bytes(name.encode())
    return root


def test_secure_boot_uses_the_sb_code_and_microsoft_enrolled_vars(tmp_path: Path) -> None:
    """uefi-secure: the SMM Secure Boot build with Microsoft's keys; uefi: the plain pair."""
    root = _ovmf(tmp_path / "ovmf")
    secure = locate(Firmware.UEFI_SECURE, root)
    assert (secure.code.name, secure.vars_template.name) == (
        "OVMF_CODE_4M.secboot.fd",
        "OVMF_VARS_4M.ms.fd",
    )
    plain = locate(Firmware.UEFI, root)
    assert (plain.code.name, plain.vars_template.name) == ("OVMF_CODE_4M.fd", "OVMF_VARS_4M.fd")


def test_a_missing_file_is_firmware_missing_naming_file_and_package(tmp_path: Path) -> None:
    """Without the enrolled template, uefi-secure is refused with the file and the fix,
    while uefi (whose files are there) is still found."""
    root = _ovmf(tmp_path / "ovmf", FILES[:3])
    with pytest.raises(FirmwareMissingError) as err:
        locate(Firmware.UEFI_SECURE, root)
    assert err.value.code == "firmware_missing" and err.value.status == 503
    assert "OVMF_VARS_4M.ms.fd" in err.value.message and "ovmf" in err.value.message
    assert available(root) == {"uefi": str(root / "OVMF_CODE_4M.fd")}
    assert available(tmp_path / "none") == {}
