"""Instance disk files on this host: ``<disks_root>/<instance>/<disk>.qcow2``, or a
volume in the storage pool the disk names (``<pool>/<instance>/<disk>.qcow2``, made
through the pool; a pointer ``<disk>.qcow2.pool`` in the instance's directory says
where, so every caller of ``path`` finds it without the spec).

Creates a VM's disks on first start (a qcow2 overlay over its image, or an
empty volume) and a UEFI VM's own variable store (copied from the firmware's template,
``uefi_vars``); carries the machine-state files (UEFI variables, TPM state:
host/machinefiles.py) into and out of snapshots, backups and templates; lists what a
directory keeps (``kept``, ``names``, ``usage``: disks
outlive an instance deleted without ``--disks``) and removes them on request.
Knows nothing of QEMU processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import shutil
import stat
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

from virtfleet.drivers.base import UefiFiles
from virtfleet.drivers.qemu import firmware
from virtfleet.errors import (
    HostError,
    ImageError,
    InvalidInputError,
    NotFoundError,
    PathNotAllowedError,
)
from virtfleet.host import machinefiles
from virtfleet.model.instance import DiskSpec, Firmware, InstanceSpec
from virtfleet.model.pools import DEFAULT_POOL
from virtfleet.storage import clones, qcow2, qemuimg
from virtfleet.storage.cloudinit import write_seed
from virtfleet.storage.pools import PoolLookup

Verified = Callable[[str, Path], Awaitable[bool]]
SEED = "cidata.iso"  # rewritten from the spec at every start: never a kept disk
TEMPLATE_STATE_SUFFIX = ".machine"  # "<image>.qcow2.machine/": a template's machine state
POINTER_SUFFIX = ".qcow2.pool"  # "<disk>.qcow2.pool": where a disk in another pool is


def vars_name(mode: Firmware) -> str:
    """The file name of a VM's UEFI variable store for ``mode`` (one per mode: a Secure
    Boot store starts from other keys than a plain one)."""
    return f"{mode.value}{machinefiles.VARS_SUFFIX}"


def template_state(image_file: Path) -> Path:
    """Where a template made from a VM keeps that VM's machine-state files (its UEFI
    variables, its TPM state), beside its image file: ``<image>.qcow2.machine/``
    (storage/images.py deletes it with the image)."""
    return image_file.with_name(f"{image_file.name}{TEMPLATE_STATE_SUFFIX}")


def copy_private(source: Path, dest: Path) -> None:
    """Copy ``source`` to ``dest`` (0600, root's), never leaving a half-copied ``dest``."""
    partial = dest.with_name(f".{dest.name}.part")
    shutil.copyfile(source, partial)
    partial.chmod(0o600)
    os.replace(partial, dest)


class DiskManager:
    def __init__(
        self,
        root: Path,
        image_path: Callable[[str], Path],
        verified: Verified | None = None,
        firmware_dir: Path = firmware.OVMF_DIR,
        pools: PoolLookup | None = None,
    ) -> None:
        self.root = root
        self._pools = pools  # None: every disk is in the default pool
        self.firmware_dir = firmware_dir  # where the OVMF code and variable templates are
        self._image_path = image_path  # image name -> file; NotFoundError if unknown
        self._verified = verified  # (image, file) -> unchanged since its sha256 was taken

    def dir(self, instance: str) -> Path:
        return self.root / instance

    def path(self, instance: str, disk: str) -> Path:
        """The disk's file: where its pool pointer says, else in the instance's directory."""
        try:
            return Path(json.loads(self._pointer(instance, disk).read_text())["path"])
        except FileNotFoundError:
            return self.dir(instance) / f"{disk}.qcow2"

    def _pointer(self, instance: str, disk: str) -> Path:
        return self.dir(instance) / f"{disk}{POINTER_SUFFIX}"

    async def ensure(self, spec: InstanceSpec) -> tuple[dict[str, Path], list[Path]]:
        """Paths of every disk of ``spec``, creating missing ones; also returns the new files."""
        paths: dict[str, Path] = {}
        created: list[Path] = []
        try:
            for disk in spec.disks:
                if disk.pool not in (None, DEFAULT_POOL):
                    paths[disk.name] = await self._pooled(spec.name, disk, created)
                    continue
                path = self.path(spec.name, disk.name)
                if not path.exists():
                    await self._create(path, disk)
                    created.append(path)
                paths[disk.name] = path
        except BaseException:
            self.discard(created)
            raise
        return paths, created

    async def seed(self, spec: InstanceSpec) -> Path | None:
        """(Re)write the instance's NoCloud seed ISO from its spec; None without cloud-init."""
        path = self.dir(spec.name) / SEED
        if spec.cloud_init is None:
            path.unlink(missing_ok=True)
            return None
        self._private_dir(spec.name)
        seed = await asyncio.to_thread(write_seed, path, spec.name, spec.cloud_init, spec.uuid)
        seed.chmod(0o600)  # user data may hold secrets; QEMU opens it before dropping to its uid
        return seed

    async def uefi_vars(self, spec: InstanceSpec) -> tuple[UefiFiles | None, list[Path]]:
        """The flash files of a UEFI VM, making its variable store from the firmware's
        template on first use (it then lives with the disks); also returns the new files.
        (None, []) for BIOS; ``FirmwareMissingError`` if the firmware is not installed."""
        if spec.firmware is Firmware.BIOS:
            return None, []
        found = firmware.locate(spec.firmware, self.firmware_dir)
        path = self.dir(spec.name) / vars_name(spec.firmware)
        created: list[Path] = []
        if not path.exists():
            self._private_dir(spec.name)
            # 0600: QEMU opens it as root, then drops to the VM's uid.
            await asyncio.to_thread(copy_private, found.vars_template, path)
            created.append(path)
        secure = spec.firmware is Firmware.UEFI_SECURE
        return UefiFiles(found.code, path, secure), created

    def tpm_state(self, spec: InstanceSpec) -> Path | None:
        """Where the VM's TPM keeps its state (the driver gives it to swtpm's uid); None
        without a TPM."""
        if not spec.tpm:
            return None
        self._private_dir(spec.name)
        return self.dir(spec.name) / machinefiles.TPM_DIR

    @contextlib.contextmanager
    def driver_iso(self, spec: InstanceSpec) -> Iterator[int | None]:
        """A read-only descriptor of ``spec``'s driver ISO for one launch (closed on leaving:
        QEMU inherits its own copy); None without one. The path was checked when the VM was
        made; it is opened again without following a symbolic link: ``PathNotAllowedError``
        if it became one, ``NotFoundError`` if it is gone, ``InvalidInputError`` if it is
        no regular file (a FIFO must not hang the start: O_NONBLOCK)."""
        if spec.driver_iso is None:
            yield None
            return
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
        try:
            fd = os.open(spec.driver_iso, flags)
        except FileNotFoundError as err:
            raise NotFoundError(f"driver ISO {spec.driver_iso} is missing") from err
        except OSError as err:
            if err.errno == errno.ELOOP:
                link = f"driver ISO {spec.driver_iso} is a symbolic link"
                raise PathNotAllowedError(link) from err
            raise InvalidInputError(f"driver ISO {spec.driver_iso}: {err.strerror}") from err
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise InvalidInputError(f"driver ISO {spec.driver_iso} is not a regular file")
            yield fd
        finally:
            os.close(fd)

    def save_machine(self, instance: str, dest: Path) -> None:
        """Copy the instance's machine-state files (UEFI variables, TPM state) into ``dest``
        (a snapshot's directory): boot order, keys and TPM belong to the machine like its
        disks."""
        machinefiles.copy(self.dir(instance), dest)

    def restore_machine(self, instance: str, source: Path) -> None:
        """Put the machine-state files saved in ``source`` back (the VM is stopped); state
        ``source`` does not have (an older snapshot's TPM) is left as it is."""
        machinefiles.copy(source, self.dir(instance))

    def write_machine(self, instance: str, files: dict[str, bytes]) -> list[Path]:
        """Write machine-state files by relative name (from a backup); the files written."""
        return machinefiles.write(self.dir(instance), files)

    def to_template(self, instance: str, mode: Firmware, image: Path) -> None:
        """Keep ``instance``'s variable store for ``mode`` and TPM state beside template
        file ``image`` (``template_state``): clones start from them."""
        files = machinefiles.read(self.dir(instance))
        keep = {n: d for n, d in files.items() if n == vars_name(mode) or machinefiles.is_tpm(n)}
        if keep:
            template_state(image).mkdir(mode=0o700, exist_ok=True)
            machinefiles.write(template_state(image), keep)

    def adopt(self, instance: str, mode: Firmware, image: Path, keep_tpm: bool) -> None:
        """Give a new VM (a clone of template file ``image``) the template's variable store
        for ``mode``, and its TPM state only if ``keep_tpm``: otherwise the clone's TPM is a
        new one (new endorsement seed, so a new EK), as its MACs and UUID are new."""
        files = machinefiles.read(template_state(image))
        legacy = image.with_name(f"{image.name}.{vars_name(mode)}")  # templates made before
        if legacy.is_file() and mode is not Firmware.BIOS:
            files.setdefault(vars_name(mode), legacy.read_bytes())
        keep = {n: d for n, d in files.items() if n == vars_name(mode)}
        keep |= {n: d for n, d in files.items() if keep_tpm and machinefiles.is_tpm(n)}
        if keep:
            self._private_dir(instance)
            machinefiles.write(self.dir(instance), keep)

    def discard(self, created: list[Path]) -> None:
        """Remove disk files made by a failed start, and their directory if now empty."""
        for path in created:
            path.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                path.parent.rmdir()

    def _private_dir(self, instance: str) -> None:
        """The VM's directory, root's alone: no VM's QEMU (each its own uid) can enter it."""
        self.dir(instance).mkdir(parents=True, exist_ok=True, mode=0o700)
        self.dir(instance).chmod(0o700)  # also one made by an older version (0750)

    async def _create(self, path: Path, disk: DiskSpec) -> None:
        self._private_dir(path.parent.name)
        if disk.image:
            await self._overlay(path, disk.image, disk.size_gib)
        elif disk.size_gib is None:
            raise InvalidInputError(f"disk {disk.name!r} needs an image or a size")
        else:
            await qemuimg.create(path, int(disk.size_gib * 1024) * 1024 * 1024, None)
        path.chmod(0o600)

    async def _pooled(self, instance: str, disk: DiskSpec, created: list[Path]) -> Path:
        """Disk ``disk`` in its pool, made through the pool if missing (a linked clone of
        its image where the pool has ``thin_clone``), with its pointer here."""
        if self._pools is None or disk.pool is None:
            raise HostError(f"disk {disk.name!r}: storage pools are not available on this host")
        pool = await self._pools.open(disk.pool)
        path = pool.volume_path(instance, disk.name)
        self._private_dir(instance)
        if not path.exists():
            base = await self._base(disk.image) if disk.image else None
            if disk.size_gib is not None:
                size = int(disk.size_gib * 1024) * 1024 * 1024
            elif base is not None:
                size = qcow2.virtual_size(base)
            else:
                raise InvalidInputError(f"disk {disk.name!r} needs an image or a size")
            made = await pool.create_volume(instance, disk.name, size, backing=base)
            created.append(made)
        pointer = self._pointer(instance, disk.name)
        if not pointer.exists():
            pointer.write_text(json.dumps({"pool": disk.pool, "path": str(path)}))
            created.append(pointer)
        return path

    async def clone_into(
        self, instance: str, disk: str, pool_name: str, base: Path, linked: bool, size: int
    ) -> Path:
        """Disk ``disk`` of a template clone made in pool ``pool_name`` from ``base``: a
        linked clone where the pool has ``thin_clone`` and one is asked, else a full copy;
        with its pointer here. A failure leaves neither."""
        if self._pools is None:
            raise HostError(f"disk {disk!r}: storage pools are not available on this host")
        pool = await self._pools.open(pool_name)
        made: list[Path] = []
        self._private_dir(instance)
        try:
            if linked:
                made.append(await pool.create_volume(instance, disk, size, backing=base))
            else:
                made.append(pool.volume_path(instance, disk))
                made[-1].parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                await clones.full(base, made[-1], None)
            pointer = self._pointer(instance, disk)
            pointer.write_text(json.dumps({"pool": pool_name, "path": str(made[0])}))
            made.append(pointer)
        except BaseException:
            self.discard(made)
            raise
        return made[0]

    async def _base(self, image: str) -> Path:
        """The file of ``image``, checked unless verified since it was hashed."""
        base = self._image_path(image)
        if not base.is_file():
            raise ImageError(f"image file for {image!r} is missing: {base}")
        if self._verified is None or not await self._verified(image, base):
            # Refuse a corrupt or truncated image before a VM is layered on it (~4 ms).
            await qemuimg.check(base, "qcow2", label=repr(image))
        return base

    async def _overlay(self, path: Path, image: str, size_gib: float | None) -> None:
        """An empty qcow2 overlay over ``image``, written in-process (~0.1 ms, the layout
        ``qemu-img create -b -F qcow2`` makes, ~8 ms): absolute backing path and explicit
        format, never probed. The image is checked first unless verified since hashed."""
        base = await self._base(image)
        if size_gib is not None:
            size = int(size_gib * 1024) * 1024 * 1024
        else:
            size = qcow2.virtual_size(base)
        qcow2.write_overlay(path, base, size)

    async def grow(self, spec: InstanceSpec, paths: dict[str, Path]) -> None:
        """Grow disk files smaller than their ``size_gib`` (resized while the VM was off).

        Never shrinks: the service refused a smaller size, and a file larger than its
        spec (an image bigger than asked) is left as it is.
        """
        for disk in spec.disks:
            path = paths.get(disk.name)
            if disk.size_gib is None or path is None:
                continue
            want = int(disk.size_gib * 1024) * 1024 * 1024
            if want > qcow2.virtual_size(path):  # the header, read in-process: no fork
                await qemuimg.resize(path, want)

    def remove(self, instance: str) -> None:
        """Remove the instance's directory and its volumes in other pools."""
        for pointer in self.dir(instance).glob(f"*{POINTER_SUFFIX}"):
            self.discard([self.path(instance, pointer.name.removesuffix(POINTER_SUFFIX))])
        shutil.rmtree(self.dir(instance), ignore_errors=True)

    def kept(self, instance: str) -> list[str]:
        """The files in ``instance``'s disk directory (disks, a container's rootfs layer,
        snapshots), sorted; the cloud-init seed left out. [] if there is none."""
        try:
            return sorted(e.name for e in os.scandir(self.dir(instance)) if e.name != SEED)
        except (FileNotFoundError, NotADirectoryError):
            return []

    def names(self) -> list[str]:
        """Every name with a disk directory, sorted."""
        if not self.root.is_dir():
            return []
        return sorted(e.name for e in os.scandir(self.root) if e.is_dir(follow_symlinks=False))

    def usage(self, instance: str) -> int:
        """Bytes allocated by everything in ``instance``'s disk directory (a tree walk)."""
        total = 0
        for top, dirs, files in os.walk(self.dir(instance)):
            for name in (*dirs, *files):
                with contextlib.suppress(OSError):
                    total += os.lstat(os.path.join(top, name)).st_blocks * 512
        return total
