"""A container's root file system: a shared read-only lower tree and its own overlay layer.

Owns extracting an image tarball once into ``<lower_root>/<key>/`` (ownership
shifted into the user-namespace range when one is used), the per-container
``upper``/``work`` directories, mounting the overlay at the container's mount
point (under a mount root its mapped root can traverse) and unmounting it, and
snapshots of a stopped container's upper layer (tarballs) with restore. Must not
run containers.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import shutil
import tarfile
from pathlib import Path

from virtfleet.errors import HostError, ImageError, NotFoundError

MNT_DETACH = 2
_libc = ctypes.CDLL(None, use_errno=True)


def _key(tar: Path, shift: int) -> str:
    st = tar.stat()
    raw = f"{tar.resolve()}:{st.st_size}:{st.st_mtime_ns}:{shift}".encode()
    return hashlib.sha256(raw).hexdigest()[:16]


def _lower_dir(tar: Path, lower_root: Path, shift: int) -> Path:
    return lower_root / f"{tar.name.split('.')[0]}-{_key(tar, shift)}"


def extracted(tar: Path, lower_root: Path, shift: int = 0) -> Path | None:
    """The tree ``ensure_lower`` made of ``tar`` if it exists already (a few stat calls)."""
    if not tar.is_file():
        return None
    dest = _lower_dir(tar, lower_root, shift)
    return dest if dest.is_dir() else None


def ensure_lower(tar: Path, lower_root: Path, shift: int = 0) -> Path:
    """The extracted tree of image tarball ``tar`` (uids/gids + ``shift``), made once."""
    if not tar.is_file():
        raise ImageError(f"container rootfs {tar} is missing")
    dest = _lower_dir(tar, lower_root, shift)
    if dest.is_dir():
        return dest
    lower_root.mkdir(parents=True, exist_ok=True, mode=0o711)
    lower_root.chmod(0o711)  # explicit: the daemon's umask (077) would drop others' bits
    staging = lower_root / f".{dest.name}.tmp-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(mode=0o755)
    staging.chmod(0o755)
    try:
        _extract(tar, staging, shift)
        os.chown(staging, shift, shift)
        os.replace(staging, dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return dest


def _extract(tar: Path, dest: Path, shift: int) -> None:
    try:
        with tarfile.open(tar) as archive:
            for member in archive:
                if member.isdev() or member.name.startswith(("dev/", "./dev/")):
                    continue  # the runtime mounts a fresh /dev
                member.uid += shift
                member.gid += shift
                _parents(dest, member.name, shift)
                archive.extract(member, dest, numeric_owner=True, filter="fully_trusted")
    except (tarfile.TarError, OSError) as err:
        raise ImageError(f"cannot extract container rootfs {tar}: {err}") from err


def _parents(dest: Path, name: str, shift: int) -> None:
    """Directories a member needs that the tarball did not list first: made 0755 and owned
    by the container's root (tarfile would make them 0700 by the daemon's umask, as host
    root, and the container could not enter them)."""
    missing = []
    for parent in Path(name.removeprefix("./") or ".").parents:
        if parent == Path(".") or (dest / parent).exists():
            break
        missing.append(dest / parent)
    for path in reversed(missing):
        path.mkdir(mode=0o755)
        path.chmod(0o755)
        os.chown(path, shift, shift)


def prepare_layer(layer: Path, shift: int) -> tuple[Path, Path]:
    """The container's ``upper`` and ``work`` directories, owned by its root."""
    upper, work = layer / "upper", layer / "work"
    for path in (layer, upper, work):
        path.mkdir(parents=True, exist_ok=True, mode=0o755)
        path.chmod(0o755)  # the container's "/" (the daemon's umask is 077)
        os.chown(path, shift, shift)
    return upper, work


def make_traversable(path: Path) -> None:
    """Create ``path`` and its missing parents 0711 (the daemon's umask would make them
    0700); ``path`` itself is made 0711. Existing parents are the operator's: untouched."""
    missing = [p for p in (path, *path.parents) if not p.exists()]
    for directory in reversed(missing):
        directory.mkdir(exist_ok=True)
        directory.chmod(0o711)
    path.chmod(0o711)


def is_mounted(target: Path) -> bool:
    return os.path.ismount(target)


def mount_overlay(lower: Path, upper: Path, work: Path, target: Path) -> None:
    """Mount the overlay at ``target`` (idempotent); mount(2) directly: no helper process."""
    target.mkdir(parents=True, exist_ok=True)
    if is_mounted(target):
        return
    opts = f"lowerdir={lower},upperdir={upper},workdir={work}"
    if _libc.mount(b"overlay", bytes(target), b"overlay", 0, opts.encode()) != 0:
        raise HostError(f"mounting the rootfs overlay at {target} failed: {_errno()}")


def mount_overlay_lowers(lowers: list[Path], upper: Path, work: Path, target: Path) -> None:
    """``mount_overlay`` with several lower dirs, ``lowers`` lowest first."""
    mount_overlay(Path(":".join(str(p) for p in reversed(lowers))), upper, work, target)


def unmount(target: Path) -> None:
    """Unmount ``target`` if mounted (lazily if busy: the container's last files close)."""
    if not is_mounted(target):
        return
    if _libc.umount2(bytes(target), 0) != 0 and _libc.umount2(bytes(target), MNT_DETACH) != 0:
        raise HostError(f"unmounting {target} failed: {_errno()}")


def _errno() -> str:
    return os.strerror(ctypes.get_errno())


def snapshot(upper: Path, dest: Path) -> None:
    """Save the upper layer as a tarball at ``dest`` (numeric owners kept)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp")
    try:
        with tarfile.open(tmp, "w") as archive:
            archive.add(upper, arcname=".")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def restore(snap: Path, upper: Path, work: Path) -> None:
    """Replace the upper layer with snapshot ``snap`` (the overlay must be unmounted)."""
    if not snap.is_file():
        raise NotFoundError(f"snapshot {snap.stem!r} not found")
    staging = upper.with_name("upper.restore")
    shutil.rmtree(staging, ignore_errors=True)
    with tarfile.open(snap) as archive:
        archive.extractall(staging, numeric_owner=True, filter="fully_trusted")
    shutil.rmtree(upper)
    os.replace(staging, upper)
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(work / "work")  # overlayfs' scratch dir; stale after the swap
