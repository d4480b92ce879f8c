"""Content-addressed chunk files: ``chunks/<2 hex>/<sha256>.zst``, zstd-compressed.

Owns naming, compressing, atomic writing (tmp file + rename: a chunk path never
holds a partial file) and checking chunks. Must not know manifests or disks.
"""

from __future__ import annotations

import errno
import hashlib
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import zstandard

from virtfleet.errors import RepositoryFullError, VirtfleetError

CHUNK_SIZE = 1024 * 1024  # fixed, disk-offset aligned: unchanged ranges keep their hash
ZERO = "zero"  # manifest entry of an all-zero chunk: never stored
ZSTD_LEVEL = 3  # fast, ~3x on typical OS data
_ZEROS = bytes(CHUNK_SIZE)


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ChunkStore:
    def __init__(self, root: Path, tmp: Path) -> None:
        self.root = root
        self.tmp = tmp
        self._local = threading.local()  # zstd contexts are not thread-safe: one per thread

    def _ctx(self, kind: str, make: Callable[[], Any]) -> Any:
        ctx = getattr(self._local, kind, None)
        if ctx is None:
            ctx = make()
            setattr(self._local, kind, ctx)
        return ctx

    def path(self, chunk: str) -> Path:
        return self.root / chunk[:2] / f"{chunk}.zst"

    def exists(self, chunk: str) -> bool:
        return chunk == ZERO or self.path(chunk).is_file()

    def put(self, data: bytes) -> tuple[str, int]:
        """Store ``data`` unless present; (its hash, bytes newly written: 0 when deduplicated)."""
        if data == (_ZEROS if len(data) == CHUNK_SIZE else bytes(len(data))):  # memcmp, no copy
            return ZERO, 0
        chunk = digest(data)
        path = self.path(chunk)
        if path.is_file():
            return chunk, 0
        packed = self._ctx("c", lambda: zstandard.ZstdCompressor(level=ZSTD_LEVEL)).compress(data)
        tmp = self.tmp / f"chunk-{chunk}-{os.getpid()}-{threading.get_ident()}"
        try:
            path.parent.mkdir(exist_ok=True)
            with open(tmp, "wb") as fh:
                fh.write(packed)
                fh.flush()
                # start writeback now (and drop the pages): the publishing sync has less to wait on
                os.posix_fadvise(fh.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
            os.replace(tmp, path)  # atomic: readers see the whole chunk or none
        except OSError as err:
            tmp.unlink(missing_ok=True)
            raise translate_os_error(err, "writing a chunk") from err
        return chunk, len(packed)

    def get(self, chunk: str, size: int = CHUNK_SIZE) -> bytes:
        """The chunk's bytes, checked against its name; ``VirtfleetError`` if damaged/missing."""
        if chunk == ZERO:
            return bytes(size)
        try:
            dctx = self._ctx("d", zstandard.ZstdDecompressor)
            data: bytes = dctx.decompress(self.path(chunk).read_bytes())
        except (OSError, zstandard.ZstdError) as err:
            raise VirtfleetError(f"chunk {chunk} unreadable: {err}") from err
        if digest(data) != chunk:
            raise VirtfleetError(f"chunk {chunk} does not match its hash")
        return data

    def check(self, chunk: str) -> bool:
        """Whether the chunk is present and intact (re-reads and re-hashes it)."""
        try:
            self.get(chunk)
        except VirtfleetError:
            return False
        return True

    def all(self) -> Iterator[str]:
        for path in self.root.glob("*/*.zst"):
            yield path.name.removesuffix(".zst")

    def remove(self, chunk: str) -> int:
        path = self.path(chunk)
        try:
            size = path.stat().st_size
            path.unlink()
        except FileNotFoundError:
            return 0
        return size


def translate_os_error(err: OSError, doing: str) -> VirtfleetError:
    """The repository's error for ``err`` (full disk: ``RepositoryFullError``)."""
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return RepositoryFullError(f"backup repository is full while {doing}: {err.strerror}")
    return VirtfleetError(f"backup repository I/O error while {doing}: {err}")
