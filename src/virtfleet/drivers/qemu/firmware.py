"""Where a VM's UEFI firmware comes from: Debian's OVMF 4M builds (package ``ovmf``).

Owns the table of firmware files per mode (read-only code image + the variable
store template a VM's own store is copied from) and finding them on this host.
Must not copy or open them for a VM: host/disks.py makes the per-VM store and
config.py turns the result into QEMU arguments.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from virtfleet.errors import FirmwareMissingError
from virtfleet.model.instance import Firmware

OVMF_DIR = Path("/usr/share/OVMF")
# uefi-secure: the Secure Boot code build (it needs SMM) with Microsoft's keys enrolled in
# the variable template, so Microsoft-signed shims (Debian's, Windows) boot with SB enforced.
_FILES: dict[Firmware, tuple[str, str]] = {
    Firmware.UEFI: ("OVMF_CODE_4M.fd", "OVMF_VARS_4M.fd"),
    Firmware.UEFI_SECURE: ("OVMF_CODE_4M.secboot.fd", "OVMF_VARS_4M.ms.fd"),
}


@dataclass(frozen=True)
class FirmwareFiles:
    """One UEFI mode's files on this host: the code image and the variable template."""

    mode: Firmware
    code: Path
    vars_template: Path


def locate(mode: Firmware, root: Path = OVMF_DIR) -> FirmwareFiles:
    """The files of ``mode`` (not bios) under ``root``; ``FirmwareMissingError`` naming
    the missing file and the package that provides it."""
    code, template = (root / name for name in _FILES[mode])
    for path in (code, template):
        if not path.is_file():
            raise FirmwareMissingError(
                f"firmware {mode.value} needs {path}, which is missing: install Debian's "
                "'ovmf' package (apt-get install ovmf)"
            )
    return FirmwareFiles(mode, code, template)


def available(root: Path = OVMF_DIR) -> dict[str, str]:
    """Each UEFI mode whose files are all present -> its code image path."""
    found: dict[str, str] = {}
    for mode in _FILES:
        try:
            found[mode.value] = str(locate(mode, root).code)
        except FirmwareMissingError:
            continue
    return found
