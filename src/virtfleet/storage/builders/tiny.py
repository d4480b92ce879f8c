"""Recipe ``tiny``: the day-one guest disk image, from Debian packages only.

The Debian cloud kernel with the modules the guest needs (``kernel``), a
busybox initramfs that loads them and switches to the root filesystem, and a
busybox root tree with the guest's scripts (data files in
``virtfleet/storage/guest/``), on a bootable disk (``disk``; BIOS by default:
syslinux through QEMU's default SeaBIOS; ``tiny-efi``: the EFI layout of ``efi``).
Cached under ``<cache_dir>/tiny``: the ``.deb`` files, the extracted kernel and
busybox, and the finished image, keyed by ``TINY_VERSION``, the layout and a
digest of the builder's sources and guest files, so a warm call only copies it.
Building needs root so that the root filesystem's files are owned by root.
"""

from __future__ import annotations

import hashlib
import inspect
import os
from pathlib import Path

from virtfleet.storage.builders import Progress, disk, efi, kernel, no_progress
from virtfleet.storage.builders.debs import busybox_applets, cached_busybox
from virtfleet.storage.builders.files import cached_file, copy_atomic, prune, write_new_file
from virtfleet.storage.builders.kernel import INITRAMFS_INIT, guest_file
from virtfleet.storage.builders.run import require_tools

__all__ = ["KERNEL_CMDLINE", "TINY_VERSION", "build_tiny", "build_tiny_efi"]

#: Bump when the image changes in a way guests can notice.
TINY_VERSION = "1"
ROOT_LABEL = "tinyroot"
# no_timer_check: under TCG on a loaded host the timer IRQ can arrive too late for the
# kernel's IO-APIC check, which then panics ("IO-APIC + timer doesn't work").
KERNEL_CMDLINE = f"console=ttyS0 root=LABEL={ROOT_LABEL} rw quiet panic=-1 no_timer_check"
DISK = disk.DiskSpec(size_mib=256, boot_mib=32, boot_label="TINYBOOT", root_label=ROOT_LABEL)
PACKAGE_TOOLS = ("apt-get", "apt-cache", "dpkg-deb", "depmod")

#: Root filesystem files: (path in guest, data file in guest/, mode).
ROOTFS_FILES = (
    ("etc/inittab", "inittab", 0o644),
    ("etc/init.d/rcS", "rcS", 0o755),
    ("etc/init.d/rcK", "rcK", 0o755),
    ("etc/virtfleet/hotplug", "hotplug", 0o755),
    ("etc/virtfleet/udhcpc", "udhcpc", 0o755),
    ("etc/acpi/PWRF/00000080", "acpi-power", 0o755),
    ("etc/profile", "profile", 0o644),
    ("etc/passwd", "passwd", 0o644),
    ("etc/group", "group", 0o644),
)
ROOTFS_DIRS = ("bin", "sbin", "usr/bin", "usr/sbin", "dev", "proc", "sys", "run", "tmp", "mnt")


def build_tiny(
    out: Path, cache_dir: Path, progress: Progress | None = None, layout: disk.Layout = disk.BIOS
) -> None:
    """Write the ``tiny`` qcow2 image to ``out``, building it into ``cache_dir`` if needed."""
    report = progress or no_progress
    cache = cache_dir / "tiny"
    # One cached image per layout: building one never prunes another's.
    prefix = "tiny" if layout.name == disk.BIOS.name else f"tiny-{layout.name}"
    cached = cache / f"{prefix}-{TINY_VERSION}-{content_digest(layout)}.qcow2"
    if not cached.is_file():
        tools = (*PACKAGE_TOOLS, *disk.DISK_TOOLS, *layout.tools)
        require_tools("building the tiny image", tools, layout.files)
        stale = f"{prefix}-[0-9]*.qcow2"
        cached_file(cached, lambda tmp, work: _build(tmp, cache, work, layout, report), stale)
        prune(cache.glob("kernel-*"), keep={kernel.kernel_dir(cache)})  # older selections
    report(95, "copying image")
    copy_atomic(cached, out)
    report(100, "tiny image ready")


def build_tiny_efi(out: Path, cache_dir: Path, progress: Progress | None = None) -> None:
    """The ``tiny-efi`` image: ``tiny`` on the EFI layout (GPT, ESP, signed shim + GRUB),
    for UEFI and Secure Boot VMs."""
    build_tiny(out, cache_dir, progress, efi.EFI)


def _build(dest: Path, cache: Path, work: Path, layout: disk.Layout, report: Progress) -> None:
    report(5, "fetching kernel")
    guest_kernel = kernel.cached_kernel(cache, work, report)
    report(40, f"kernel {guest_kernel.version}; fetching busybox")
    busybox = cached_busybox(cache, work)
    report(50, "writing initramfs")
    initrd = work / "initrd.img"
    kernel.write_initramfs(initrd, busybox, guest_kernel)
    report(60, "writing root filesystem tree")
    root = work / "root"
    _populate_rootfs(root, busybox)
    report(70, "assembling disk")
    raw = work / "disk.raw"
    entry = disk.BootEntry("tiny", guest_kernel.vmlinuz, initrd, KERNEL_CMDLINE)
    disk.assemble(raw, DISK, layout, entry, root, cache)
    report(90, "converting to qcow2")
    disk.convert_to_qcow2(raw, dest)


def _populate_rootfs(root: Path, busybox: Path) -> None:
    """Lay out the guest root tree; regular files first, relative symlinks last."""
    root.mkdir()
    for directory in ROOTFS_DIRS:
        (root / directory).mkdir(parents=True, exist_ok=True)
    (root / "root").mkdir(mode=0o700)
    (root / "tmp").chmod(0o1777)
    write_new_file(root / "bin/busybox", busybox.read_bytes(), 0o755)
    for guest_path, data_file, mode in ROOTFS_FILES:
        (root / guest_path).parent.mkdir(parents=True, exist_ok=True)
        write_new_file(root / guest_path, guest_file(data_file), mode)
    for applet in busybox_applets(busybox):
        link = root / applet
        if link.name == "busybox" or os.path.lexists(link):
            continue
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath("bin/busybox", start=Path(applet).parent))


def content_digest(layout: disk.Layout) -> str:
    """A short digest of the layout, the modules that make the image and the guest files
    (the packages aside): any change to them makes a new cache key."""
    digest = hashlib.sha256(f"{TINY_VERSION}\0{layout.name}\0".encode())
    for module in (__file__, kernel.__file__, disk.__file__):
        digest.update(Path(module).read_bytes())
    if layout.name != disk.BIOS.name:  # the layout's own module (BIOS lives in disk.py)
        digest.update(Path(inspect.getfile(type(layout))).read_bytes())
    for name in sorted({INITRAMFS_INIT, *(data for _, data, _ in ROOTFS_FILES)}):
        digest.update(name.encode() + b"\0" + guest_file(name))
    return digest.hexdigest()[:12]
