"""The tiny guest's kernel: the Debian cloud kernel, the modules it loads and its initramfs.

Owns choosing the kernel modules the guest needs (closed over ``modules.dep``,
dependencies first), caching the kernel image with those modules
(``<cache>/kernel-<package>-<selection digest>``) and writing the gzip'ed
``newc`` initramfs that loads them and switches to the root filesystem.
"""

from __future__ import annotations

import gzip
import hashlib
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from io import BufferedIOBase
from pathlib import Path

from virtfleet.errors import ImageError
from virtfleet.storage.builders import Progress
from virtfleet.storage.builders.debs import depends_on, extract_deb, fetch_current
from virtfleet.storage.builders.files import cached_dir
from virtfleet.storage.builders.run import run

#: The cloud flavour boots about twice as fast under TCG as the generic one
#: (LZ4 instead of XZ, fewer built-in drivers); "linux-image-amd64" also
#: works and adds AHCI and e1000/e1000e at that cost.
KERNEL_PACKAGE = "linux-image-cloud-amd64"

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
INITRAMFS_INIT = "initramfs-init"


@dataclass(frozen=True)
class Kernel:
    """An extracted kernel in the cache: image, selected modules, load order."""

    version: str
    vmlinuz: Path
    modules: Path
    load_order: tuple[str, ...]


def guest_file(name: str) -> bytes:
    """A data file of the tiny guest (``virtfleet/storage/guest/<name>``)."""
    return resources.files("virtfleet.storage").joinpath("guest", name).read_bytes()


def kernel_dir(cache: Path) -> Path:
    """Where the kernel lives in the cache, keyed by package and module selection."""
    modules = hashlib.sha256(" ".join((*GUEST_MODULES, "|", *OPTIONAL_MODULES)).encode())
    return cache / f"kernel-{KERNEL_PACKAGE}-{modules.hexdigest()[:8]}"


def cached_kernel(cache: Path, work: Path, report: Progress) -> Kernel:
    """The kernel image and the guest's modules, extracted into the cache if needed."""

    def fill(staging: Path) -> None:
        deb = fetch_current(lambda: depends_on(KERNEL_PACKAGE, "linux-image-"), cache / "debs")
        report(20, f"extracting {deb.name}")
        _stage_kernel(deb, staging, work / "kernel-deb")

    dest = cached_dir(kernel_dir(cache), "load.list", fill)
    version = (dest / "version").read_text().strip()
    order = tuple((dest / "load.list").read_text().split())
    return Kernel(version, dest / "vmlinuz", dest / "modules", order)


def _stage_kernel(deb: Path, staging: Path, unpacked: Path) -> None:
    """Copy the kernel image and the guest's modules (in load order) into ``staging``."""
    extract_deb(deb, unpacked)
    versions = sorted(p.name for p in (unpacked / "lib/modules").iterdir())
    if len(versions) != 1:
        raise ImageError(f"{deb.name} ships {len(versions)} module trees, expected one")
    version = versions[0]
    run(["depmod", "-b", unpacked, version])
    moddir = unpacked / "lib/modules" / version
    order = module_load_order(moddir, GUEST_MODULES, OPTIONAL_MODULES)
    (staging / "modules").mkdir()
    names = []
    for rel in order:
        if not rel.endswith(".ko"):
            raise ImageError(f"compressed kernel modules are not supported: {rel}")
        names.append(Path(rel).name)
        shutil.copyfile(moddir / rel, staging / "modules" / names[-1])
    shutil.copyfile(unpacked / "boot" / f"vmlinuz-{version}", staging / "vmlinuz")
    (staging / "version").write_text(f"{version}\n")
    (staging / "load.list").write_text("".join(f"{name}\n" for name in names))  # the marker
    shutil.rmtree(unpacked, ignore_errors=True)


def _module_name(path: str) -> str:
    base = Path(path).name
    return base[: base.index(".ko")].replace("-", "_")


def module_load_order(moddir: Path, required: Sequence[str], optional: Sequence[str]) -> list[str]:
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


def write_initramfs(path: Path, busybox: Path, kernel: Kernel) -> None:
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
        cpio.add("init", 0o100755, guest_file(INITRAMFS_INIT))
        for name in kernel.load_order:
            cpio.add(f"lib/modules/{name}", 0o100644, (kernel.modules / name).read_bytes())
        listing = "".join(f"{name}\n" for name in kernel.load_order).encode()
        cpio.add("lib/modules/load.list", 0o100644, listing)
        cpio.close()
