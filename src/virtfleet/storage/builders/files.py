"""Atomic writes for the builders: a file or directory appears whole or not at all.

Every output (an image handed to the image store, a cached image, a cached
tree) is written under a temporary name in its final directory and renamed into
place; on any failure the temporary is removed, so nothing half-written is ever
left where a later call would take it for finished.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path


def tmp_sibling(path: Path) -> Path:
    """A fresh, unique temporary file next to ``path`` (same filesystem, for os.replace)."""
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    return Path(name)


def write_atomic(dest: Path, write: Callable[[Path], object], mode: int = 0o644) -> None:
    """Have ``write`` fill a temporary sibling of ``dest``, then rename it to ``dest``."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_sibling(dest)
    try:
        write(tmp)
        os.chmod(tmp, mode)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def copy_atomic(src: Path, dest: Path) -> None:
    """Copy a finished image to ``dest``, private (it goes to the data directory)."""
    write_atomic(dest, lambda tmp: shutil.copyfile(src, tmp), mode=0o600)


def cached_file(cached: Path, build: Callable[[Path, Path], object], stale: str) -> Path:
    """``cached``, first built if absent by ``build(tmp_out, work_dir)``.

    The work directory is temporary; after a build, other files in the cache
    directory matching the glob ``stale`` (older versions) are removed.
    """
    if not cached.is_file():
        cached.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".build-", dir=cached.parent) as work:
            write_atomic(cached, lambda tmp: build(tmp, Path(work)))
        prune(cached.parent.glob(stale), keep={cached})
    return cached


def cached_dir(dest: Path, marker: str, fill: Callable[[Path], None]) -> Path:
    """``dest``, first filled by ``fill(staging)`` if its ``marker`` file is absent.

    ``fill`` must write ``marker`` last; a concurrent build that wins the rename
    race is kept.
    """
    if not (dest / marker).is_file():
        dest.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
        try:
            fill(staging)
            staging.chmod(0o755)
            _install_dir(staging, dest, marker)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return dest


def _install_dir(staging: Path, dest: Path, marker: str) -> None:
    if not (dest / marker).is_file():
        shutil.rmtree(dest, ignore_errors=True)  # an unfinished leftover
    try:
        os.rename(staging, dest)
    except OSError:
        if not (dest / marker).is_file():
            raise


def prune(paths: Iterable[Path], keep: set[Path]) -> None:
    """Remove ``paths`` (files or trees) except those in ``keep``."""
    for path in paths:
        if path in keep:
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def write_new_file(path: Path, data: bytes, mode: int) -> None:
    """Create ``path`` afresh, never following a symlink (the tree is a guest's)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.chmod(path, mode, follow_symlinks=False)
