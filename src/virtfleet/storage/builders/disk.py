"""Bootable disk assembly: a raw disk with a FAT boot partition and an ext4 root, as qcow2.

The disk has two partitions: 1 is the FAT boot partition holding the kernel,
the initramfs and the boot loader; 2 is the ext4 root (by label) made from a
directory tree. Nothing is mounted on the host: the filesystems are written
into the image file at their offsets (``mkfs.fat --offset``, mtools,
``mke2fs -d -E offset``). What differs between firmware lives in a ``Layout``:
its partition table, its boot loader and how it is installed. ``BIOS`` (MBR +
syslinux, booted by SeaBIOS) is the one layout today; an EFI layout (GPT + an
EFI system partition with a UEFI loader) is another ``Layout``, which the
recipes take as a parameter and put in their cache keys.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from virtfleet.storage.builders.run import run

MIB = 1024 * 1024
SECTOR = 512
BOOT_START_SECTOR = 2048  # 1 MiB aligned, as every partitioning tool does
DISK_TOOLS = ("sfdisk", "mkfs.fat", "mcopy", "mke2fs", "qemu-img")


@dataclass(frozen=True)
class BootEntry:
    """What the boot loader starts: a kernel, its initramfs and command line."""

    name: str
    kernel: Path
    initrd: Path
    cmdline: str


@dataclass(frozen=True)
class DiskSpec:
    """The disk's size, its boot partition's size and the two filesystems' labels."""

    size_mib: int
    boot_mib: int
    boot_label: str
    root_label: str


@dataclass(frozen=True)
class Partition:
    """A partition of the raw disk, in bytes."""

    offset: int
    size: int


class Layout(Protocol):
    """Firmware-specific part of a disk: partition table, boot loader and what they need."""

    @property
    def name(self) -> str:
        """Short, stable name; part of every image cache key."""

    @property
    def tools(self) -> tuple[str, ...]:
        """Host tools ``install`` runs."""

    @property
    def files(self) -> dict[Path, str]:
        """Host files ``install`` reads, with the Debian package that ships each."""

    @property
    def fat_bits(self) -> int:
        """The boot partition's FAT type (12, 16 or 32)."""

    def table(self, boot_sectors: int) -> str:
        """The ``sfdisk`` script of two partitions: 1 the boot FAT, 2 the root (to the end)."""

    def install(self, raw: Path, boot: Partition, entry: BootEntry, cache: Path) -> None:
        """Put the loader and ``entry`` on the formatted boot partition (and the disk).

        ``cache`` is the recipe's cache directory, for what a loader downloads.
        """


class MbrSyslinux:
    """BIOS boot: an MBR with syslinux's boot code, syslinux on a FAT16 boot partition."""

    MBR_BOOT_CODE = Path("/usr/lib/syslinux/mbr/mbr.bin")
    name = "bios"
    tools = ("syslinux",)
    files = {MBR_BOOT_CODE: "syslinux-common"}
    fat_bits = 16

    def table(self, boot_sectors: int) -> str:
        return (
            "label: dos\nunit: sectors\n\n"
            f"start={BOOT_START_SECTOR}, size={boot_sectors}, type=c, bootable\n"
            f"start={BOOT_START_SECTOR + boot_sectors}, type=83\n"
        )

    def install(self, raw: Path, boot: Partition, entry: BootEntry, cache: Path) -> None:
        del cache  # syslinux comes from the host
        config = raw.with_name("syslinux.cfg")
        config.write_text(
            f"DEFAULT {entry.name}\nPROMPT 0\nTIMEOUT 0\nLABEL {entry.name}\n"
            f"  LINUX /vmlinuz\n  INITRD /initrd.img\n  APPEND {entry.cmdline}\n"
        )
        boot_files = {"vmlinuz": entry.kernel, "initrd.img": entry.initrd, "syslinux.cfg": config}
        copy_to_fat(raw, boot, boot_files)
        run(["syslinux", "--offset", str(boot.offset), "--install", raw])
        with raw.open("r+b") as out:
            out.write(self.MBR_BOOT_CODE.read_bytes()[:440])  # the code area, not the table


BIOS: Layout = MbrSyslinux()


def copy_to_fat(raw: Path, part: Partition, files: dict[str, Path]) -> None:
    """Copy host files into the FAT filesystem at ``part``, under the given names."""
    for name, source in files.items():
        run(["mcopy", "-i", f"{raw}@@{part.offset}", source, f"::/{name}"])


def assemble(
    raw: Path, disk: DiskSpec, layout: Layout, entry: BootEntry, root: Path, cache: Path
) -> None:
    """Write the raw disk: ``layout``'s table and loader, the boot FAT, the ext4 ``root``.

    ``raw`` lies in a scratch directory the layout may write its files beside.
    """
    with raw.open("wb") as out:
        out.truncate(disk.size_mib * MIB)
    table = layout.table(disk.boot_mib * MIB // SECTOR)
    run(["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", raw], stdin=table)
    boot, root_part = partitions(raw)
    run(
        ["mkfs.fat", "-F", str(layout.fat_bits), "-n", disk.boot_label,
         "--offset", str(boot.offset // SECTOR), raw, str(boot.size // 1024)]
    )  # fmt: skip
    layout.install(raw, boot, entry, cache)
    run(
        ["mke2fs", "-q", "-F", "-t", "ext4", "-b", "4096", "-L", disk.root_label, "-d", root,
         "-E", f"offset={root_part.offset},lazy_itable_init=0,lazy_journal_init=0",
         raw, f"{root_part.size // 1024}k"]
    )  # fmt: skip


def partitions(raw: Path) -> list[Partition]:
    """The partitions ``sfdisk`` wrote to ``raw``, in table order."""
    table = json.loads(run(["sfdisk", "--json", raw]))["partitiontable"]
    unit = int(table.get("sectorsize", SECTOR))
    return [Partition(p["start"] * unit, p["size"] * unit) for p in table["partitions"]]


def convert_to_qcow2(raw: Path, dest: Path) -> None:
    """Write ``raw`` as a qcow2 file at ``dest`` (zeroed clusters left out)."""
    run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, dest])
