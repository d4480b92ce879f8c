"""Clone disks from a store image: linked (a qcow2 overlay backed by it) or full (a copy).

Owns creating one clone disk file atomically (it appears complete or not at all).
Must not know instances or the state store: callers pass paths.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from pathlib import Path

from virtfleet.errors import ImageError
from virtfleet.storage import qcow2, qemuimg

Progress = Callable[[int, str], None]  # called from the copying thread

COPY_CHUNK = 64 << 20


async def linked(base: Path, dest: Path, virtual_size: int) -> None:
    """A qcow2 overlay at ``dest`` over the qcow2 ``base`` (absolute backing path, -F qcow2).

    Written in-process (one small header, no qemu-img fork).
    """
    if not base.is_file():
        raise ImageError(f"base image {base} is missing")
    dest.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
    qcow2.write_overlay(dest, base, virtual_size)


async def full(base: Path, dest: Path, progress: Progress | None = None) -> None:
    """An independent copy of the standalone qcow2 ``base`` at ``dest``.

    ``ImageError`` if ``base`` has a backing file (a copy would still depend on it).
    """
    head = (await qemuimg.info(base, "qcow2"))[0]
    if head.get("backing-filename"):
        raise ImageError(f"{base.name} has a backing file; a full clone needs a standalone image")
    dest.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
    tmp = dest.with_name(f".{dest.name}.cloning")
    try:
        await asyncio.to_thread(_copy, base, tmp, progress)
        os.replace(tmp, dest)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def _copy(src: Path, dest: Path, progress: Progress | None) -> None:
    """copy_file_range in chunks (in-kernel, reflinks where the filesystem can)."""
    total = src.stat().st_size
    done = 0
    with src.open("rb") as fin, dest.open("wb") as fout:
        os.fchmod(fout.fileno(), 0o600)  # the daemon user's alone, like every disk
        while done < total:
            n = os.copy_file_range(fin.fileno(), fout.fileno(), min(COPY_CHUNK, total - done))
            if n == 0:
                break
            done += n
            if progress is not None:
                progress(int(100 * done / total), f"copied {done >> 20} of {total >> 20} MiB")
    if done != total:
        raise ImageError(f"copy of {src.name} stopped at {done} of {total} bytes")
