"""File back-ends: ``dir`` (a directory of this host: today's disks) and ``shared-dir``
(a directory every host has mounted: NFS, CephFS, GlusterFS mounted by the admin).

Owns the volume layout ``<root>/<instance>/<disk>.qcow2`` (the one the data dir's
``disks/`` always had, so the default pool is that directory unchanged), the path
rules a pool's directory must meet, and the shared directory's marker and lock
checks. Must not know the store or instances.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable
from pathlib import Path

from virtfleet.errors import (
    AlreadyExistsError,
    ImageError,
    InUseError,
    InvalidInputError,
    PathNotAllowedError,
)
from virtfleet.model.pools import EVERY_CAPABILITY, HostCheck, PoolCapabilities, PoolRecord
from virtfleet.storage import clones, qcow2, qemuimg
from virtfleet.storage.pools import probe
from virtfleet.storage.pools.base import PoolContext, Space, VolumeInfo, register

SUFFIX = ".qcow2"


def check_path(path: str, private: tuple[Path, ...]) -> Path:
    """The directory ``path`` names if a pool may live there; else one-line errors:
    relative, ``..`` or unnormalised, missing, not a directory (a symlink is not one),
    or inside or around a private directory (``PathNotAllowedError``)."""
    if not os.path.isabs(path):
        raise InvalidInputError(f"pool path {path!r} must be absolute")
    norm = os.path.normpath(path)
    if ".." in path.split("/") or path not in (norm, f"{norm}/") or "\0" in path:
        raise InvalidInputError(f"pool path {path!r} must be normalised (no '..', '.', '//')")
    try:
        st = os.lstat(path)
    except OSError as err:
        raise InvalidInputError(f"pool path {path}: {err.strerror}") from err
    if not stat.S_ISDIR(st.st_mode):
        raise InvalidInputError(f"pool path {path} is not a directory")
    real = Path(os.path.realpath(path))
    for each in private:
        mine = Path(os.path.realpath(each))
        if real == mine or real.is_relative_to(mine) or mine.is_relative_to(real):
            raise PathNotAllowedError(f"pool path {path} overlaps the data directory {each}")
    return Path(path)


class DirPool:
    """Volumes are qcow2 files under a directory of this host (not shared)."""

    capabilities = PoolCapabilities(thin_clone=True, snapshots=True, dirty_bitmaps=True)

    def __init__(self, record: PoolRecord, ctx: PoolContext) -> None:
        self.record = record
        self._ctx = ctx
        self.root = Path(record.path) if record.path is not None else ctx.default_root

    def validate(self) -> None:
        if self.record.path is not None:  # None: the data dir's own, set by us
            check_path(self.record.path, self._ctx.private)

    def prepare(self) -> str | None:
        return None

    def probe(self, host_id: str) -> HostCheck:
        if not self.root.is_dir():
            why = f"{self.root} is not a directory on this host"
            return HostCheck(
                host=host_id, reachable=False, marker_ok=False, lock_ok=False, message=why
            )
        lock_ok, why = probe.locks_work(self.root, host_id)
        return HostCheck(host=host_id, reachable=True, marker_ok=True, lock_ok=lock_ok, message=why)

    def space(self) -> Space:
        st = os.statvfs(self.root)
        return Space(st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize)

    def volumes(self) -> list[VolumeInfo]:
        found: list[VolumeInfo] = []
        for instance in _entries(self.root, stat.S_ISDIR):
            for name in _entries(self.root / instance, stat.S_ISREG):
                if name.endswith(SUFFIX):
                    found.append(self._info(instance, name.removesuffix(SUFFIX)))
        return found

    def volume_path(self, instance: str, disk: str) -> Path:
        return self.root / instance / f"{disk}{SUFFIX}"

    async def create_volume(
        self, instance: str, disk: str, size_bytes: int, backing: Path | None = None
    ) -> Path:
        path = self.volume_path(instance, disk)
        if path.exists():
            raise AlreadyExistsError(f"volume {instance}/{disk} exists in pool {self.record.name}")
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if backing is None:
            await qemuimg.create(path, size_bytes, None)
        elif self.capabilities.thin_clone:
            qcow2.write_overlay(path, backing, size_bytes)
        else:
            await clones.full(backing, path)
        path.chmod(0o600)  # the daemon's alone; QEMU gets it before dropping privileges
        return path

    async def grow_volume(self, instance: str, disk: str, size_bytes: int) -> None:
        path = self.volume_path(instance, disk)
        if size_bytes > qcow2.virtual_size(path):
            await qemuimg.resize(path, size_bytes)

    def delete_volume(self, instance: str, disk: str) -> None:
        path = self.volume_path(instance, disk)
        path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            path.parent.rmdir()  # only if nothing else of the instance is there

    def destroy(self) -> None:
        return None

    def _info(self, instance: str, disk: str) -> VolumeInfo:
        path = self.volume_path(instance, disk)
        try:
            size = qcow2.virtual_size(path)
        except (ImageError, OSError):
            size = 0  # being written, or not ours: still listed, so a delete names it
        with contextlib.suppress(OSError):
            return VolumeInfo(instance, disk, path, size, os.stat(path).st_blocks * 512)
        return VolumeInfo(instance, disk, path, size, 0)


class SharedDirPool(DirPool):
    """A directory every host mounted: the same filesystem, proven by a marker token the
    creating host writes and every other host reads back, and by the lock probe."""

    capabilities = EVERY_CAPABILITY

    def prepare(self) -> str | None:
        found = probe.read_marker(self.root)
        if found is not None and found[0] != self.record.name:
            raise InUseError(f"{self.root} already holds the marker of pool {found[0]!r}")
        return probe.write_marker(self.root, self.record.name)

    def probe(self, host_id: str) -> HostCheck:
        check = super().probe(host_id)
        if not check.reachable:
            return check
        found = probe.read_marker(self.root)
        if found is not None and found[1] == self.record.marker:
            return check
        why = "no marker" if found is None else f"the marker of pool {found[0]!r}, another token"
        msg = f"{self.root} here is not the pool's filesystem ({why}); {check.message}".rstrip("; ")
        return check.model_copy(update={"marker_ok": False, "message": msg})

    def destroy(self) -> None:
        found = probe.read_marker(self.root)
        if found is not None and found[1] == self.record.marker:
            probe.remove_marker(self.root)


def _entries(root: Path, test: Callable[[int], bool]) -> list[str]:
    """Sorted non-hidden names in ``root`` of the file type ``test`` (an ``S_IS*``) accepts,
    links not followed; [] if ``root`` is no directory."""
    try:
        with os.scandir(root) as entries:
            return sorted(
                e.name
                for e in entries
                if not e.name.startswith(".") and test(e.stat(follow_symlinks=False).st_mode)
            )
    except (FileNotFoundError, NotADirectoryError):
        return []


register("dir")(DirPool)
register("shared-dir")(SharedDirPool)
