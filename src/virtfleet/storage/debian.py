"""Builds ``debian-12``, a general-purpose guest: Debian bookworm by debootstrap with systemd,
cloud-init (NoCloud only), qemu-guest-agent, openssh-server and the cloud kernel.

Owns that image's recipe and its cache (``cache_dir/debian-12``, keyed by the
recipe's digest: a warm build only copies the finished qcow2). The disk is laid
out like the tiny guest's (MBR + syslinux FAT boot partition + ext4 root by
label), written without mounting anything. Needs root and the network path to
the Debian mirror (``VIRTFLEET_DEBIAN_MIRROR``, default deb.debian.org).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from virtfleet.errors import ImageError
from virtfleet.storage.tiny import (
    BOOT_START_SECTOR,
    MBR_BOOT_CODE,
    MIB,
    SECTOR,
    Progress,
    _copy_atomic,
    _no_progress,
    _run,
    _tmp_sibling,
)

__all__ = ["build_debian12"]

SUITE = "bookworm"
MIRROR = os.environ.get("VIRTFLEET_DEBIAN_MIRROR", "http://deb.debian.org/debian")
#: python3-cffi-backend provides the virtual packages python3-cryptography needs;
#: debootstrap's resolver does not pick providers of virtual packages itself.
PACKAGES = (
    "systemd", "systemd-sysv", "udev", "dbus", "linux-image-cloud-amd64", "initramfs-tools",
    "cloud-init", "python3-cffi-backend", "qemu-guest-agent", "openssh-server",
    "ifupdown", "isc-dhcp-client", "netbase", "iproute2", "sudo",
)  # fmt: skip
ROOT_LABEL = "debianroot"
CMDLINE = f"console=ttyS0 root=LABEL={ROOT_LABEL} rw quiet"
DISK_MIB = 2048
BOOT_MIB = 96
RECIPE_VERSION = "1"
CLOUD_CFG = """\
# virtfleet: only the NoCloud seed (CIDATA CD-ROM); no network metadata probing.
datasource_list: [NoCloud, None]
"""
FSTAB = f"LABEL={ROOT_LABEL} / ext4 defaults,noatime 0 1\n"


def build_debian12(out: Path, cache_dir: Path, progress: Progress | None = None) -> None:
    """Write the ``debian-12`` qcow2 to ``out``, building it into ``cache_dir`` if needed."""
    report = progress or _no_progress
    cache = cache_dir / "debian-12"
    cache.mkdir(parents=True, exist_ok=True)
    cached = cache / f"debian-12-{_digest()}.qcow2"
    if not cached.is_file():
        for tool in ("debootstrap", "mke2fs", "mkfs.fat", "mcopy", "syslinux", "sfdisk"):
            if shutil.which(tool) is None:
                raise ImageError(f"building debian-12 needs {tool}; run scripts/bootstrap.sh")
        with tempfile.TemporaryDirectory(prefix=".build-", dir=cache) as work:
            _build(cached, Path(work), report)
        for stale in cache.glob("debian-12-*.qcow2"):
            if stale != cached:
                stale.unlink(missing_ok=True)
    report(95, "copying image")
    _copy_atomic(cached, out)
    report(100, "debian-12 image ready")


def _digest() -> str:
    recipe = "\0".join((RECIPE_VERSION, SUITE, *PACKAGES, CMDLINE, CLOUD_CFG, str(DISK_MIB)))
    return hashlib.sha256(recipe.encode()).hexdigest()[:12]


def _build(dest: Path, work: Path, report: Progress) -> None:
    root = work / "root"
    report(5, "debootstrap (a minute or two)")
    _run(
        ["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE, root, MIRROR]
    )
    report(60, "configuring the root filesystem")
    _configure(root)
    kernel, initrd = _boot_files(root)
    report(70, "assembling disk")
    raw = work / "disk.raw"
    _assemble(raw, kernel, initrd, root, work)
    report(85, "converting to qcow2")
    tmp = _tmp_sibling(dest)
    try:
        _run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, tmp])
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def _configure(root: Path) -> None:
    (root / "etc/fstab").write_text(FSTAB)
    (root / "etc/hostname").write_text("debian\n")
    (root / "etc/cloud/cloud.cfg.d/90-virtfleet.cfg").write_text(CLOUD_CFG)
    (root / "etc/network/interfaces").write_text(
        "source /etc/network/interfaces.d/*\nauto lo\niface lo inet loopback\n"
    )
    # Every clone gets its own machine-id and SSH host keys at first boot.
    (root / "etc/machine-id").write_text("")
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    shutil.rmtree(root / "var/cache/apt/archives", ignore_errors=True)
    (root / "var/cache/apt/archives/partial").mkdir(parents=True)
    shutil.rmtree(root / "var/lib/apt/lists", ignore_errors=True)
    (root / "var/lib/apt/lists/partial").mkdir(parents=True)


def _boot_files(root: Path) -> tuple[Path, Path]:
    kernels = sorted((root / "boot").glob("vmlinuz-*"))
    if not kernels:
        raise ImageError("debootstrap installed no kernel")
    version = kernels[-1].name.removeprefix("vmlinuz-")
    initrd = root / "boot" / f"initrd.img-{version}"
    if not initrd.is_file():
        raise ImageError(f"no initramfs for kernel {version}")
    return kernels[-1], initrd


def _assemble(raw: Path, kernel: Path, initrd: Path, root: Path, work: Path) -> None:
    """MBR + syslinux on a FAT boot partition + the ext4 root filesystem made from ``root``."""
    boot_sectors = BOOT_MIB * MIB // SECTOR
    root_start = BOOT_START_SECTOR + boot_sectors
    with raw.open("wb") as f:
        f.truncate(DISK_MIB * MIB)
    layout = (
        f"label: dos\nunit: sectors\n\nstart={BOOT_START_SECTOR}, size={boot_sectors}, "
        f"type=c, bootable\nstart={root_start}, type=83\n"
    )
    _run(["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", raw], stdin=layout)
    with raw.open("r+b") as f:
        f.write(MBR_BOOT_CODE.read_bytes()[:440])
    offset = BOOT_START_SECTOR * SECTOR
    config = work / "syslinux.cfg"
    config.write_text(
        "DEFAULT debian\nPROMPT 0\nTIMEOUT 0\nLABEL debian\n"
        f"  LINUX /vmlinuz\n  INITRD /initrd.img\n  APPEND {CMDLINE}\n"
    )
    _run(
        [
            "mkfs.fat",
            "-F",
            "16",
            "-n",
            "DEBBOOT",
            "--offset",
            str(BOOT_START_SECTOR),
            raw,
            str(BOOT_MIB * 1024),
        ]
    )
    for source, name in ((kernel, "vmlinuz"), (initrd, "initrd.img"), (config, "syslinux.cfg")):
        _run(["mcopy", "-i", f"{raw}@@{offset}", source, f"::/{name}"])
    _run(["syslinux", "--offset", str(offset), "--install", raw])
    root_kib = (DISK_MIB * MIB - root_start * SECTOR) // 1024
    _run(
        ["mke2fs", "-q", "-F", "-t", "ext4", "-b", "4096", "-L", ROOT_LABEL, "-d", root,
         "-E", f"offset={root_start * SECTOR}", raw, f"{root_kib}k"]
    )  # fmt: skip
