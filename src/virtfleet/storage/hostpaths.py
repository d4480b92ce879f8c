"""Host files that imports read and exports write: confinement, safe opening, the work directory.

Owns which host paths a request may name (inside the import or export
directory; anywhere for the trusted local root), opening them without following
symbolic links (below a confined directory every component is opened with
``O_NOFOLLOW``), creating work files with ``O_CREAT|O_EXCL|O_NOFOLLOW`` in the
daemon's private work directory, publishing a finished work file as a new
target without overwriting or following anything, and removing what a killed
daemon left there. Must not run qemu-img or know image formats.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import stat
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import psutil

from virtfleet.errors import (
    AlreadyExistsError,
    InvalidInputError,
    NotFoundError,
    PathNotAllowedError,
)
from virtfleet.storage.qemuimg import Jail

log = logging.getLogger(__name__)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_NEW_FILE = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass
class Target:
    """A new file to create: its parent directory (held open) and its name there."""

    dir_fd: int
    name: str
    shown: str  # the path, for messages

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.dir_fd)


@dataclass
class HostPaths:
    """The import, export and work directories, and the jail qemu-img runs in."""

    import_dir: Path
    export_dir: Path
    work_dir: Path
    jail: Jail = field(default_factory=Jail)

    def prepare(self) -> None:
        """Create the directories; the work directory only the daemon may enter or write."""
        for path in (self.import_dir, self.export_dir):
            path.mkdir(parents=True, exist_ok=True, mode=0o750)
        self.work_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        st = os.lstat(self.work_dir)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
            raise InvalidInputError(f"work directory {self.work_dir} is not the daemon's own")
        os.chmod(self.work_dir, 0o700)

    def open_source(self, path: str, trusted: bool, allow_dir: bool = False) -> tuple[int, str]:
        """A read-only descriptor of the regular file (``allow_dir``: or directory)
        ``path`` names, and how to show it.

        ``PathNotAllowedError`` outside the import directory (unless ``trusted``) or
        through a symbolic link; ``NotFoundError`` if missing."""
        parent, name, shown = self._parent(path, self.import_dir, "import", trusted)
        try:
            # O_NONBLOCK: a FIFO planted there must not hang the daemon (refused below)
            flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
            fd = os.open(name, flags, dir_fd=parent)
        except OSError as err:
            raise _path_error(err, shown) from err
        finally:
            os.close(parent)
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode) and not (allow_dir and stat.S_ISDIR(mode)):
            os.close(fd)
            raise InvalidInputError(f"{shown} is not a regular file")
        return fd, shown

    def target(self, path: str, trusted: bool) -> Target:
        """Where an export may create ``path``; ``AlreadyExistsError`` if anything is there."""
        parent, name, shown = self._parent(path, self.export_dir, "export", trusted)
        try:
            os.stat(name, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            return Target(parent, name, shown)
        except OSError as err:
            os.close(parent)
            raise _path_error(err, shown) from err
        os.close(parent)
        raise AlreadyExistsError(f"{shown} already exists; exports never overwrite")

    def _parent(self, path: str, root: Path, what: str, trusted: bool) -> tuple[int, str, str]:
        """(descriptor of the parent directory, final name, shown path) of ``path``."""
        if not path or "\0" in path:
            raise InvalidInputError(f"give a file path, not {path[:200]!r}")
        parts = self._inside(path, root, what, trusted)
        if parts is None:  # the trusted local root, outside the directory: its own choice
            full = Path(os.path.normpath(path))
            try:
                return os.open(full.parent, _DIR_FLAGS), full.name, str(full)
            except OSError as err:
                raise _path_error(err, str(full.parent)) from err
        shown = str(root.joinpath(*parts))
        try:
            fd = os.open(root, _DIR_FLAGS)
        except OSError as err:
            raise _path_error(err, str(root)) from err
        try:
            for part in parts[:-1]:
                below = _descend(fd, part, shown)
                os.close(fd)
                fd = below
        except BaseException:
            os.close(fd)
            raise
        return fd, parts[-1], shown

    def _inside(self, path: str, root: Path, what: str, trusted: bool) -> list[str] | None:
        """The components of ``path`` below ``root``; None for a trusted path outside it."""
        pure = PurePosixPath(path)
        if not pure.is_absolute():
            if ".." in pure.parts:
                raise PathNotAllowedError(f"{path[:200]!r} leaves the {what} directory")
            parts = [p for p in pure.parts if p != "."]
        else:
            full = Path(os.path.normpath(path))
            base = next((r for r in (root, root.resolve()) if full.is_relative_to(r)), None)
            if base is None:
                if trusted:
                    return None
                raise PathNotAllowedError(
                    f"{path[:200]} is outside the {what} directory {root}; put the file there "
                    f"or name it relative to it"
                )
            parts = list(full.relative_to(base).parts)
        if not parts:
            raise InvalidInputError(f"{path[:200]!r} names the {what} directory, not a file")
        return parts

    def work_file(self, suffix: str, mode: int = 0o600) -> tuple[int, Path]:
        """A new empty file in the work directory, open read-write."""
        path = self.work_dir / f"{uuid.uuid4().hex}{suffix}"
        return os.open(path, _NEW_FILE, mode), path

    def work_subdir(self, prefix: str) -> Path:
        """A new private directory in the work directory (the caller removes it)."""
        return Path(tempfile.mkdtemp(prefix=prefix, dir=self.work_dir))

    def publish(self, tmp: Path, target: Target) -> None:
        """Make the finished work file ``tmp`` appear as ``target`` (never overwriting,
        never through a link); ``tmp`` is gone afterwards."""
        try:
            os.link(tmp, target.name, dst_dir_fd=target.dir_fd, follow_symlinks=False)
        except FileExistsError as err:
            raise AlreadyExistsError(
                f"{target.shown} already exists; exports never overwrite"
            ) from (err)
        except OSError as err:
            if err.errno != errno.EXDEV:
                raise _path_error(err, target.shown) from err
            _copy_into(tmp, target)  # another file system: copy into an exclusive new file
        finally:
            tmp.unlink(missing_ok=True)

    def clean_work(self, legacy_dir: Path | None = None) -> list[str]:
        """Remove what killed imports and exports left (and stop jailed qemu-img still
        writing there); ``legacy_dir``: also older releases' ``.*.importing`` files."""
        if not self.work_dir.is_dir():
            return []
        _kill_holders(self.work_dir, self.jail.uid)
        removed = [_remove(Path(e.path)) for e in os.scandir(self.work_dir)]
        if legacy_dir is not None and legacy_dir.is_dir():
            old = [*legacy_dir.glob(".*.importing"), *legacy_dir.glob(".ova-*")]
            removed += [_remove(p) for p in old]
        if removed:
            log.info("removed %d work file(s) of interrupted imports/exports", len(removed))
        return removed


def _descend(fd: int, part: str, shown: str) -> int:
    """Open directory ``part`` below ``fd`` without following a link."""
    try:
        return os.open(part, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=fd)
    except OSError as err:
        raise _path_error(err, shown) from err


def _path_error(err: OSError, shown: str) -> Exception:
    if err.errno in (errno.ELOOP, errno.ENOTDIR):
        return PathNotAllowedError(f"{shown}: a symbolic link or non-directory is in the way")
    if err.errno == errno.ENOENT:
        return NotFoundError(f"no such file or directory: {shown}")
    if err.errno in (errno.EACCES, errno.EPERM):
        return PathNotAllowedError(f"{shown}: permission denied")
    return InvalidInputError(f"{shown}: {err.strerror}")


def copy_sparse(src: int, dst: int) -> None:
    """Copy the file at descriptor ``src`` into ``dst``, leaving holes as holes."""
    size = os.fstat(src).st_size
    offset = 0
    while offset < size:
        try:
            data = os.lseek(src, offset, os.SEEK_DATA)
        except OSError as err:
            if err.errno != errno.ENXIO:  # ENXIO: only a hole is left
                raise
            break
        end = os.lseek(src, data, os.SEEK_HOLE)
        _copy_range(src, dst, data, end)
        offset = end
    os.ftruncate(dst, size)


def _copy_range(src: int, dst: int, start: int, end: int) -> None:
    """Bytes ``start..end`` at the same offsets; in the kernel where it can (same file system)."""
    while start < end:
        try:
            done = os.copy_file_range(src, dst, end - start, start, start)
        except OSError as err:
            if err.errno not in (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                raise
            done = os.pwrite(dst, os.pread(src, min(end - start, 1 << 20), start), start)
        if done == 0:
            return
        start += done


def _copy_into(tmp: Path, target: Target) -> None:
    try:
        out = os.open(
            target.name, _NEW_FILE & ~os.O_RDWR | os.O_WRONLY, 0o644, dir_fd=target.dir_fd
        )
    except FileExistsError as err:  # also a symbolic link planted there: O_EXCL never follows
        raise AlreadyExistsError(f"{target.shown} already exists; exports never overwrite") from (
            err
        )
    try:
        src = os.open(tmp, os.O_RDONLY | os.O_CLOEXEC)
        try:
            copy_sparse(src, out)
            os.fsync(out)
        finally:
            os.close(src)
    except BaseException:
        os.unlink(target.name, dir_fd=target.dir_fd)
        raise
    finally:
        os.close(out)


def _kill_holders(work_dir: Path, uid: int | None) -> None:
    """Kill qemu-img processes (jailed, or exports run as the daemon) that a killed daemon
    left writing files here: they would go on filling deleted files."""
    prefix = f"{work_dir}/"
    for proc in psutil.process_iter(["name", "uids"]):
        with contextlib.suppress(psutil.Error):
            uids = proc.info["uids"]
            jailed = uid is not None and uids is not None and uids.real == uid
            if (jailed or proc.info["name"] == "qemu-img") and any(
                f.path.startswith(prefix) for f in proc.open_files()
            ):
                proc.kill()


def _remove(path: Path) -> str:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
    return path.name
