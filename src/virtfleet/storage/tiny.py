"""Builds ``tiny``, the day-one guest disk image, from Debian packages only.

This module owns everything about that image: fetching the kernel and
busybox ``.deb`` files with ``apt-get download``, choosing the kernel modules
the guest needs (closed over ``modules.dep``), writing the initramfs, laying
out the busybox root tree, assembling the BIOS-bootable disk and caching all
of it under a cache directory.

The disk is MBR-partitioned: partition 1 is a small FAT filesystem holding
syslinux, the kernel and the initramfs (booted by syslinux's ``mbr.bin``
through QEMU's default SeaBIOS); partition 2 is the ext4 root (label
``tinyroot``) the initramfs switches to. Nothing is mounted on the host: the
filesystems are written into the image file at their offsets by
``mkfs.fat --offset``/mtools/``syslinux --offset`` and ``mke2fs -d -E offset``.
Building needs root so that the root filesystem's files are owned by root.

The guest's scripts live as data files in ``virtfleet/storage/guest/``.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from io import BufferedIOBase
from pathlib import Path

from virtfleet.errors import ImageError, ProcessError

__all__ = ["KERNEL_CMDLINE", "TINY_VERSION", "build_tiny"]

#: Bump when the image changes in a way guests can notice.
TINY_VERSION = "1"

#: The cloud flavour boots about twice as fast under TCG as the generic one
#: (LZ4 instead of XZ, fewer built-in drivers); "linux-image-amd64" also
#: works and adds AHCI and e1000/e1000e at that cost.
KERNEL_PACKAGE = "linux-image-cloud-amd64"
BUSYBOX_PACKAGE = "busybox-static"
ROOT_LABEL = "tinyroot"
KERNEL_CMDLINE = f"console=ttyS0 root=LABEL={ROOT_LABEL} rw quiet panic=-1"

MIB = 1024 * 1024
SECTOR = 512
DISK_MIB = 256
BOOT_START_SECTOR = 2048
BOOT_MIB = 32
MBR_BOOT_CODE = Path("/usr/lib/syslinux/mbr/mbr.bin")

#: Modules the initramfs loads, in this order (each after its dependencies);
#: one built into the kernel is skipped. The crypto helpers come first: they
#: are soft dependencies (ext4/jbd2 -> crc32c, sd_mod -> crc-t10dif and
#: crc64-rocksoft) that ``modules.dep`` does not list.
GUEST_MODULES = (
    "crc32c_generic",
    "crct10dif_generic",
    "crc64_rocksoft_generic",
    "virtio_pci",
    "virtio_blk",
    "virtio_scsi",
    "virtio_net",
    "virtio_balloon",
    "virtio_rng",
    "virtio_console",
    "ata_piix",
    "sd_mod",
    "sr_mod",
    "isofs",
    "ext4",
    "qemu_fw_cfg",
    "button",
    "evdev",
)
#: Loaded too where the kernel has them; the cloud kernel lacks the AHCI,
#: e1000 and e1000e drivers and has vmxnet3 as its only emulated NIC.
OPTIONAL_MODULES = (
    "ahci",
    "e1000",
    "e1000e",
    "vmxnet3",
)

#: Host tools the cold build runs, with the Debian package that ships each.
HOST_TOOLS = {
    "apt-get": "apt",
    "apt-cache": "apt",
    "dpkg-deb": "dpkg",
    "depmod": "kmod",
    "sfdisk": "fdisk",
    "mkfs.fat": "dosfstools",
    "mcopy": "mtools",
    "syslinux": "syslinux",
    "mke2fs": "e2fsprogs",
    "qemu-img": "qemu-utils",
}

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
INITRAMFS_INIT = "initramfs-init"

Progress = Callable[[int, str], None]


@dataclass(frozen=True)
class _Kernel:
    """An extracted kernel in the cache: image, selected modules, load order."""

    version: str
    vmlinuz: Path
    modules: Path
    load_order: tuple[str, ...]


def build_tiny(out: Path, cache_dir: Path, progress: Progress | None = None) -> None:
    """Write the ``tiny`` qcow2 image to ``out``, building it into ``cache_dir`` if needed.

    Everything cached lives under ``cache_dir/tiny``: the ``.deb`` files, the
    extracted kernel and busybox, and the finished image, which is keyed by
    ``TINY_VERSION`` plus a digest of the guest files, so a warm call only
    copies it.
    """
    report = progress or _no_progress
    cache = cache_dir / "tiny"
    cache.mkdir(parents=True, exist_ok=True)
    cached = cache / f"tiny-{TINY_VERSION}-{_content_digest()}.qcow2"
    if not cached.is_file():
        _check_host_tools()
        with tempfile.TemporaryDirectory(prefix=".build-", dir=cache) as work:
            _build_qcow2(cached, cache, Path(work), report)
        _prune(cache, keep=cached)
    report(95, "copying image")
    _copy_atomic(cached, out)
    report(100, "tiny image ready")


def _no_progress(percent: int, message: str) -> None:
    del percent, message


def _build_qcow2(dest: Path, cache_dir: Path, work: Path, report: Progress) -> None:
    report(5, "fetching kernel")
    kernel = _cached_kernel(cache_dir, work, report)
    report(40, f"kernel {kernel.version}; fetching busybox")
    busybox = _cached_busybox(cache_dir, work)
    report(50, "writing initramfs")
    initrd = work / "initrd.img"
    _write_initramfs(initrd, busybox, kernel)
    report(60, "writing root filesystem tree")
    root = work / "root"
    _populate_rootfs(root, busybox)
    report(70, "assembling disk")
    raw = work / "disk.raw"
    _assemble_disk(raw, kernel.vmlinuz, initrd, root, work)
    report(90, "converting to qcow2")
    tmp = _tmp_sibling(dest)
    try:
        _run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, tmp])
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


# --- host commands -----------------------------------------------------------


def _run(cmd: Sequence[str | Path], *, cwd: Path | None = None, stdin: str | None = None) -> str:
    """Run a helper; raise ``ProcessError`` with its stderr tail if it fails."""
    args = [str(arg) for arg in cmd]
    env = {**os.environ, "LC_ALL": "C", "MTOOLS_SKIP_CHECK": "1"}
    try:
        proc = subprocess.run(
            args, cwd=cwd, input=stdin, capture_output=True, text=True, errors="replace",
            env=env, check=False,
        )  # fmt: skip
    except OSError as err:
        raise ProcessError(f"cannot run {args[0]}: {err}", command=args) from err
    if proc.returncode != 0:
        tail = _tail(proc.stderr or proc.stdout)
        raise ProcessError(
            f"{args[0]} failed (exit {proc.returncode}): {tail}",
            command=args, returncode=proc.returncode, stderr=tail,
        )  # fmt: skip
    return proc.stdout


def _tail(text: str, lines: int = 3, limit: int = 400) -> str:
    kept = [line.strip() for line in text.splitlines() if line.strip()][-lines:]
    return " | ".join(kept)[-limit:] or "(no output)"


def _check_host_tools() -> None:
    missing = [f"{tool} ({pkg})" for tool, pkg in HOST_TOOLS.items() if not shutil.which(tool)]
    if not MBR_BOOT_CODE.is_file():
        missing.append(f"{MBR_BOOT_CODE} (syslinux-common)")
    if missing:
        raise ImageError(
            f"building the tiny image needs {', '.join(missing)}; run scripts/bootstrap.sh"
        )


# --- Debian packages ---------------------------------------------------------


def _fetch_deb(package: str, debs: Path) -> Path:
    """Return the cached ``.deb`` of ``package``, downloading it if absent."""
    debs.mkdir(parents=True, exist_ok=True)
    cached = sorted(debs.glob(f"{package}_*.deb"))
    if cached:
        return cached[-1]
    staging = Path(tempfile.mkdtemp(prefix=".download-", dir=debs))
    try:
        _run(["apt-get", "-q", "-o", "APT::Sandbox::User=root", "download", package], cwd=staging)
        found = sorted(staging.glob(f"{package}_*.deb"))
        if not found:
            raise ImageError(f"apt-get download {package} produced no .deb")
        dest = debs / found[0].name
        os.replace(found[0], dest)
        return dest
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _fetch_current(package_of: Callable[[], str], debs: Path) -> Path:
    """Fetch ``package_of()``; on failure refresh apt's lists once, re-resolve and retry.

    Stale lists can name a version the archive no longer serves (security
    updates replace the kernel), and fresh machines may have no lists at all.
    """
    try:
        return _fetch_deb(package_of(), debs)
    except ProcessError:
        _run(["apt-get", "update", "-qq"])
        return _fetch_deb(package_of(), debs)


def _kernel_package() -> str:
    """Name the versioned image package the ``KERNEL_PACKAGE`` metapackage points at."""
    text = _run(["apt-cache", "show", "--no-all-versions", KERNEL_PACKAGE])
    for line in text.splitlines():
        if line.startswith("Depends:"):
            for dep in line.removeprefix("Depends:").split(","):
                name = dep.split()[0] if dep.split() else ""
                if name.startswith("linux-image-"):
                    return name
    raise ImageError(f"cannot tell which kernel {KERNEL_PACKAGE} depends on")


def _extract_deb(deb: Path, dest: Path) -> None:
    _run(["dpkg-deb", "-x", deb, dest])


# --- kernel ------------------------------------------------------------------


def _cached_kernel(cache_dir: Path, work: Path, report: Progress) -> _Kernel:
    """The kernel image and the guest's modules, extracted into the cache if needed."""
    dest = _kernel_dir(cache_dir)
    if not (dest / "load.list").is_file():
        deb = _fetch_current(_kernel_package, cache_dir / "debs")
        report(20, f"extracting {deb.name}")
        staging = Path(tempfile.mkdtemp(prefix=".kernel-", dir=cache_dir))
        try:
            _stage_kernel(deb, staging, work / "kernel-deb")
            staging.chmod(0o755)
            _install_dir(staging, dest, marker="load.list")
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    version = (dest / "version").read_text().strip()
    order = tuple((dest / "load.list").read_text().split())
    return _Kernel(version, dest / "vmlinuz", dest / "modules", order)


def _kernel_dir(cache_dir: Path) -> Path:
    """Where the kernel lives in the cache, keyed by package and module selection."""
    modules = hashlib.sha256(" ".join((*GUEST_MODULES, "|", *OPTIONAL_MODULES)).encode())
    return cache_dir / f"kernel-{KERNEL_PACKAGE}-{modules.hexdigest()[:8]}"


def _install_dir(staging: Path, dest: Path, marker: str) -> None:
    """Move a finished ``staging`` dir to ``dest`` unless a concurrent build won the race."""
    if not (dest / marker).is_file():
        shutil.rmtree(dest, ignore_errors=True)
    try:
        os.rename(staging, dest)
    except OSError:
        if not (dest / marker).is_file():
            raise


def _stage_kernel(deb: Path, staging: Path, unpacked: Path) -> None:
    """Copy the kernel image and the guest's modules (in load order) into ``staging``."""
    _extract_deb(deb, unpacked)
    versions = sorted(p.name for p in (unpacked / "lib/modules").iterdir())
    if len(versions) != 1:
        raise ImageError(f"{deb.name} ships {len(versions)} module trees, expected one")
    version = versions[0]
    _run(["depmod", "-b", unpacked, version])
    moddir = unpacked / "lib/modules" / version
    order = _module_load_order(moddir, GUEST_MODULES, OPTIONAL_MODULES)
    (staging / "modules").mkdir()
    names = []
    for rel in order:
        if not rel.endswith(".ko"):
            raise ImageError(f"compressed kernel modules are not supported: {rel}")
        names.append(Path(rel).name)
        shutil.copyfile(moddir / rel, staging / "modules" / names[-1])
    shutil.copyfile(unpacked / "boot" / f"vmlinuz-{version}", staging / "vmlinuz")
    (staging / "load.list").write_text("".join(f"{name}\n" for name in names))
    (staging / "version").write_text(f"{version}\n")
    shutil.rmtree(unpacked, ignore_errors=True)


def _module_name(path: str) -> str:
    base = Path(path).name
    return base[: base.index(".ko")].replace("-", "_")


def _module_load_order(moddir: Path, required: Sequence[str], optional: Sequence[str]) -> list[str]:
    """Paths (relative to ``moddir``) of the wanted modules and their dependencies, deps first."""
    deps: dict[str, list[str]] = {}
    for line in (moddir / "modules.dep").read_text().splitlines():
        mod, _, rest = line.partition(":")
        deps[mod] = rest.split()
    by_name = {_module_name(path): path for path in deps}
    builtin = {_module_name(p) for p in (moddir / "modules.builtin").read_text().split()}
    order: list[str] = []

    def visit(path: str) -> None:
        if path not in order:
            for dep in deps.get(path, []):
                visit(dep)
            order.append(path)

    for name in (*required, *optional):
        if name in by_name:
            visit(by_name[name])
        elif name not in builtin and name not in optional:
            raise ImageError(f"kernel {moddir.name} has no module {name}")
    return order


# --- busybox, initramfs, root tree -------------------------------------------


def _cached_busybox(cache_dir: Path, work: Path) -> Path:
    """The static busybox binary from the ``busybox-static`` package, cached."""
    dest = cache_dir / "busybox"
    if not dest.is_file():
        unpacked = work / "busybox-deb"
        _extract_deb(_fetch_current(lambda: BUSYBOX_PACKAGE, cache_dir / "debs"), unpacked)
        tmp = _tmp_sibling(dest)
        try:
            shutil.copyfile(unpacked / "bin/busybox", tmp)
            tmp.chmod(0o755)
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
    return dest


def _guest_file(name: str) -> bytes:
    return resources.files("virtfleet.storage").joinpath("guest", name).read_bytes()


class _Cpio:
    """A minimal writer of the ``newc`` cpio format the kernel unpacks."""

    def __init__(self, out: BufferedIOBase) -> None:
        self._out = out
        self._ino = 0

    def add(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)) -> None:
        self._ino += 1
        encoded = name.encode() + b"\0"
        fields = (self._ino, mode, 0, 0, 1, 0, len(data), 0, 0, *rdev, len(encoded), 0)
        header = b"070701" + b"".join(b"%08X" % field for field in fields)
        self._write(header + encoded)
        self._write(data)

    def _write(self, chunk: bytes) -> None:
        self._out.write(chunk + b"\0" * (-len(chunk) % 4))

    def close(self) -> None:
        self.add("TRAILER!!!", 0)


def _write_initramfs(path: Path, busybox: Path, kernel: _Kernel) -> None:
    """Write the gzip'ed initramfs: busybox, /init, the modules and their load order."""
    with (
        path.open("wb") as raw,
        gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0) as out,
    ):
        cpio = _Cpio(out)
        for directory in ("bin", "dev", "proc", "sys", "newroot", "lib", "lib/modules"):
            cpio.add(directory, 0o040755)
        cpio.add("dev/console", 0o020600, rdev=(5, 1))
        cpio.add("bin/busybox", 0o100755, busybox.read_bytes())
        cpio.add("init", 0o100755, _guest_file(INITRAMFS_INIT))
        for name in kernel.load_order:
            cpio.add(f"lib/modules/{name}", 0o100644, (kernel.modules / name).read_bytes())
        listing = "".join(f"{name}\n" for name in kernel.load_order).encode()
        cpio.add("lib/modules/load.list", 0o100644, listing)
        cpio.close()


def _write_new_file(path: Path, data: bytes, mode: int) -> None:
    """Create ``path`` afresh, never following a symlink (the tree is the guest's)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.chmod(path, mode, follow_symlinks=False)


def _populate_rootfs(root: Path, busybox: Path) -> None:
    """Lay out the guest root tree; regular files first, relative symlinks last."""
    root.mkdir()
    for directory in ROOTFS_DIRS:
        (root / directory).mkdir(parents=True, exist_ok=True)
    (root / "root").mkdir(mode=0o700)
    (root / "tmp").chmod(0o1777)
    _write_new_file(root / "bin/busybox", busybox.read_bytes(), 0o755)
    for guest_path, data_file, mode in ROOTFS_FILES:
        (root / guest_path).parent.mkdir(parents=True, exist_ok=True)
        _write_new_file(root / guest_path, _guest_file(data_file), mode)
    for applet in _busybox_applets(busybox):
        link = root / applet
        if link.name == "busybox" or os.path.lexists(link):
            continue
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath("bin/busybox", start=Path(applet).parent))


def _busybox_applets(busybox: Path) -> list[str]:
    """Applet paths relative to ``/`` (``sbin/init``, ``usr/bin/awk``, ...)."""
    applets = _run([busybox, "--list-full"]).split()
    return [a for a in applets if a and not a.startswith("/") and ".." not in a]


# --- disk --------------------------------------------------------------------


def _assemble_disk(raw: Path, vmlinuz: Path, initrd: Path, root: Path, work: Path) -> None:
    """Write the partitioned raw disk: MBR + syslinux FAT boot partition + ext4 root."""
    root_start = BOOT_START_SECTOR + BOOT_MIB * MIB // SECTOR
    with raw.open("wb") as out:
        out.truncate(DISK_MIB * MIB)
    layout = (
        "label: dos\nunit: sectors\n\n"
        f"start={BOOT_START_SECTOR}, size={BOOT_MIB * MIB // SECTOR}, type=c, bootable\n"
        f"start={root_start}, type=83\n"
    )
    _run(["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", raw], stdin=layout)
    boot_code = MBR_BOOT_CODE.read_bytes()[:440]
    with raw.open("r+b") as out:
        out.write(boot_code)
    _write_boot_partition(raw, vmlinuz, initrd, work)
    root_kib = (DISK_MIB * MIB - root_start * SECTOR) // 1024
    _run(
        ["mke2fs", "-q", "-F", "-t", "ext4", "-b", "4096", "-L", ROOT_LABEL, "-d", root,
         "-E", f"offset={root_start * SECTOR},lazy_itable_init=0,lazy_journal_init=0",
         raw, f"{root_kib}k"]
    )  # fmt: skip


def _write_boot_partition(raw: Path, vmlinuz: Path, initrd: Path, work: Path) -> None:
    """FAT at partition 1 with the kernel, the initramfs and syslinux installed."""
    offset = BOOT_START_SECTOR * SECTOR
    config = work / "syslinux.cfg"
    config.write_text(
        "DEFAULT tiny\nPROMPT 0\nTIMEOUT 0\n"
        f"LABEL tiny\n  LINUX /vmlinuz\n  INITRD /initrd.img\n  APPEND {KERNEL_CMDLINE}\n"
    )
    blocks_kib = str(BOOT_MIB * 1024)
    _run(["mkfs.fat", "-n", "TINYBOOT", "--offset", str(BOOT_START_SECTOR), raw, blocks_kib])
    for source, name in ((vmlinuz, "vmlinuz"), (initrd, "initrd.img"), (config, "syslinux.cfg")):
        _run(["mcopy", "-i", f"{raw}@@{offset}", source, f"::/{name}"])
    _run(["syslinux", "--offset", str(offset), "--install", raw])


# --- cache -------------------------------------------------------------------


def _content_digest() -> str:
    """A short digest of this builder and the guest files (the packages aside).

    Any change to them makes a new cache key, so a stale image is never reused.
    """
    digest = hashlib.sha256(TINY_VERSION.encode() + b"\0" + Path(__file__).read_bytes())
    for name in sorted({INITRAMFS_INIT, *(data for _, data, _ in ROOTFS_FILES)}):
        digest.update(name.encode() + b"\0" + _guest_file(name))
    return digest.hexdigest()[:12]


def _prune(cache: Path, keep: Path) -> None:
    """Drop images and kernels an earlier version of this builder left in the cache."""
    current = {keep, _kernel_dir(cache)}
    for stale in (*cache.glob("tiny-*.qcow2"), *cache.glob("kernel-*")):
        if stale in current:
            continue
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)


def _copy_atomic(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_sibling(dest)
    try:
        shutil.copyfile(src, tmp)
        os.chmod(tmp, 0o600)  # the copy lives in the private data directory
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def _tmp_sibling(path: Path) -> Path:
    """A fresh, unique temporary file next to ``path`` (same filesystem, for os.replace)."""
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, 0o644)
    os.close(fd)
    return Path(name)
