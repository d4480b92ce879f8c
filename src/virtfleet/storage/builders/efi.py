"""The EFI ``Layout`` of ``disk``: GPT, an EFI system partition, Debian's signed shim + GRUB.

Boots under OVMF with Secure Boot enforced and Microsoft's keys enrolled: the firmware
checks shim (signed by the Microsoft UEFI CA), shim checks GRUB and GRUB the kernel
(both signed by Debian). The loaders come from the ``shim-signed`` and
``grub-efi-amd64-signed`` packages, fetched into the recipe's cache like the kernel.
Shim sits at the removable-media path (``/EFI/BOOT/BOOTX64.EFI``) so no boot entry is
needed; GRUB reads its configuration from ``/EFI/debian/grub.cfg`` (its built-in prefix).
"""

from __future__ import annotations

import functools
from pathlib import Path

from virtfleet.storage.builders.debs import extract_deb, fetch_current
from virtfleet.storage.builders.disk import BOOT_START_SECTOR, BootEntry, Partition, copy_to_fat
from virtfleet.storage.builders.run import run

SHIM_PACKAGE = "shim-signed"
GRUB_PACKAGE = "grub-efi-amd64-signed"
SHIM = "usr/lib/shim/shimx64.efi.signed"
GRUB = "usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed"
ESP_TYPE = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"  # UEFI spec 2.10, 5.3.3
LINUX_TYPE = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"


class GptShimGrub:
    """UEFI boot: a GPT with an EFI system partition holding shim, GRUB and the kernel."""

    name = "efi"
    tools = ("mmd", "dpkg-deb")
    files: dict[Path, str] = {}  # the loaders come as .debs, not from the host
    fat_bits = 16  # UEFI reads FAT12/16/32; FAT32 needs a larger partition

    def table(self, boot_sectors: int) -> str:
        return (
            "label: gpt\nunit: sectors\n\n"
            f"start={BOOT_START_SECTOR}, size={boot_sectors}, type={ESP_TYPE}, name=ESP\n"
            f"start={BOOT_START_SECTOR + boot_sectors}, type={LINUX_TYPE}, name=root\n"
        )

    def install(self, raw: Path, boot: Partition, entry: BootEntry, cache: Path) -> None:
        unpacked = raw.with_name("efi-loaders")
        for package in (SHIM_PACKAGE, GRUB_PACKAGE):
            extract_deb(fetch_current(functools.partial(str, package), cache / "debs"), unpacked)
        config = raw.with_name("grub.cfg")
        config.write_text(
            "set timeout=0\nset default=0\n"
            f"menuentry '{entry.name}' {{\n  linux /vmlinuz {entry.cmdline}\n"
            "  initrd /initrd.img\n}\n"
        )
        image = f"{raw}@@{boot.offset}"
        run(["mmd", "-i", image, "::/EFI", "::/EFI/BOOT", "::/EFI/debian"])
        files = {
            "EFI/BOOT/BOOTX64.EFI": unpacked / SHIM,
            "EFI/BOOT/grubx64.efi": unpacked / GRUB,  # shim loads it from its own directory
            "EFI/debian/grub.cfg": config,
            "vmlinuz": entry.kernel,
            "initrd.img": entry.initrd,
        }
        copy_to_fat(raw, boot, files)


EFI = GptShimGrub()
