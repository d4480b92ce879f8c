"""Which hosts hold an image's file, and taking one in from another host.

Image records are cluster-wide; their files live on each host. Owns the per-host
location records (``image-files/{name}/{host}``: where this host's copy is, its length,
sha256 and stamp) and ``receive``: a file streamed in from another member is written to
a work file beside the images (``.NAME.*.importing``: a daemon start removes leftovers),
hashed as it comes, and published (renamed to its place) only when its length and
sha256 are the record's; anything else removes the work file and raises
``ImageTransferError``. Must not speak HTTP nor choose whom to fetch from
(``service.imagefetch`` does).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from pydantic import BaseModel

from virtfleet.errors import ImageTransferError
from virtfleet.state.keys import image_file_key, image_files_prefix
from virtfleet.state.store import StateStore

LOCAL = "local"  # the host id of a store no cluster member shares (tests, old callers)
BytesProgress = Callable[[int, int], Awaitable[None]]  # (bytes done, bytes in all)


class ImageLocation(BaseModel):
    """One host's copy of an image's file."""

    host: str
    path: str
    size_bytes: int
    sha256: str
    stamp: str = ""  # file_stamp when published: unchanged since verified while it holds


class ImageFiles:
    """The location records, and this host's (``host_id``) copies under ``root``."""

    def __init__(self, store: StateStore, root: Path, host_id: str = LOCAL) -> None:
        self.store = store
        self.root = root
        self.host_id = host_id

    async def mark(self, name: str, path: Path, sha256: str, stamp: str) -> ImageLocation:
        """Record that this host holds image ``name``'s file at ``path``."""
        size = (await asyncio.to_thread(path.stat)).st_size
        here = ImageLocation(
            host=self.host_id, path=str(path), size_bytes=size, sha256=sha256, stamp=stamp
        )
        await self.store.put(image_file_key(name, self.host_id), here.model_dump_json().encode())
        return here

    async def locations(self, name: str) -> list[ImageLocation]:
        """Every host's location record of image ``name`` (stale ones included)."""
        found = await self.store.list(image_files_prefix(name))
        return [ImageLocation.model_validate_json(kv.value) for kv in found]

    async def holders(self, name: str, sha256: str) -> list[ImageLocation]:
        """The hosts holding the file of image ``name`` with content ``sha256``."""
        return [x for x in await self.locations(name) if x.sha256 == sha256]

    async def here(self, name: str, sha256: str) -> ImageLocation | None:
        """This host's copy of image ``name`` with content ``sha256``, if its file is there."""
        kv = await self.store.get(image_file_key(name, self.host_id))
        if kv is None:
            return None
        found = ImageLocation.model_validate_json(kv.value)
        exists = await asyncio.to_thread(Path(found.path).is_file)
        return found if found.sha256 == sha256 and exists else None

    async def forget(self, name: str, host_id: str | None = None) -> None:
        """Drop host ``host_id``'s (default: this host's) location record of ``name``."""
        await self.store.delete(image_file_key(name, host_id or self.host_id))

    async def receive(
        self,
        name: str,
        filename: str,
        expected: ImageLocation,
        chunks: AsyncIterator[bytes],
        progress: BytesProgress,
    ) -> ImageLocation:
        """Write ``chunks`` as this host's copy ``root/filename`` of image ``name`` if they
        are ``expected``'s length and sha256 (``ImageTransferError`` otherwise, nothing
        left); the published copy is recorded as held here."""
        dest = self.root / Path(filename).name
        work = self.root / f".{dest.name}.{secrets.token_hex(4)}.importing"
        try:
            digest, size = await _write(work, chunks, expected.size_bytes, progress)
            _check(name, expected, digest, size)
            await asyncio.to_thread(os.replace, work, dest)
        finally:
            await asyncio.to_thread(work.unlink, missing_ok=True)
        stamp = await asyncio.to_thread(_stamp, dest)
        return await self.mark(name, dest, digest, stamp)


async def _write(
    work: Path, chunks: AsyncIterator[bytes], total: int, progress: BytesProgress
) -> tuple[str, int]:
    """Write ``chunks`` to the new file ``work``: its sha256 and length."""
    digest = hashlib.sha256()
    done = 0
    work.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(work, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        async for chunk in chunks:
            if done + len(chunk) > total:
                raise ImageTransferError(f"the sender sent more than the {total} bytes expected")
            await asyncio.to_thread(os.write, fd, chunk)
            digest.update(chunk)
            done += len(chunk)
            await progress(done, total)
        await asyncio.to_thread(os.fsync, fd)
    finally:
        os.close(fd)
    return digest.hexdigest(), done


def _check(name: str, expected: ImageLocation, digest: str, size: int) -> None:
    if size != expected.size_bytes:
        raise ImageTransferError(
            f"image {name!r} arrived truncated: {size} of {expected.size_bytes} bytes"
        )
    if digest != expected.sha256:
        raise ImageTransferError(
            f"image {name!r} arrived corrupt: sha256 {digest[:12]}…, expected "
            f"{expected.sha256[:12]}…"
        )


def _stamp(path: Path) -> str:
    return file_stamp(path.stat())


def file_stamp(st: os.stat_result) -> str:
    """Size, modification time and inode: any rewrite or replacement of a file changes it."""
    return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}"
