"""Turn a disk's data into chunks: the chunk list of a ``DiskManifest``.

Two sources. A running VM's disk is read through a point-in-time view
(``ingest_ranges``: whole chunks around the given ranges, e.g. dirty ones). A
stopped VM's disk is first copied into a standalone qcow2 (``ingest``:
``qemu-img map`` tells which ranges hold data and where). Chunks not read are
inherited from the parent backup's manifest. Runs in a worker thread; must not
know QEMU's monitor.
"""

from __future__ import annotations

import functools
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from virtfleet.storage import qemuimg
from virtfleet.storage.backup.chunks import CHUNK_SIZE, ZERO, ChunkStore
from virtfleet.storage.backup.manifest import BackupStats, DiskManifest

WORKERS = max(2, min(4, os.cpu_count() or 2))
IN_FLIGHT = 2 * WORKERS


@dataclass(frozen=True)
class Extent:
    start: int
    length: int
    offset: int | None  # where the bytes sit in the target file; None: zeros


def written_extents(target: Path) -> list[Extent]:
    """Ranges the backup job wrote into ``target`` (data or explicit zeros)."""
    extents = []
    for item in qemuimg.map_extents(["-f", "qcow2", str(target)], target.name):
        if not item.get("present"):
            continue
        offset = item.get("offset") if item.get("data") else None
        extents.append(Extent(int(item["start"]), int(item["length"]), offset))
    return extents


def _by_chunk(extents: list[Extent], chunk_size: int) -> dict[int, list[Extent]]:
    """Split extents at chunk boundaries, grouped by chunk index."""
    grouped: dict[int, list[Extent]] = {}
    for ext in extents:
        pos, end = ext.start, ext.start + ext.length
        while pos < end:
            index = pos // chunk_size
            stop = min(end, (index + 1) * chunk_size)
            off = None if ext.offset is None else ext.offset + (pos - ext.start)
            grouped.setdefault(index, []).append(Extent(pos, stop - pos, off))
            pos = stop
    return grouped


def _assemble(
    fh: BinaryIO,
    index: int,
    parts: list[Extent],
    length: int,
    chunk_size: int,
    old: Callable[[], bytes],
) -> tuple[bytes, int]:
    """The new bytes of chunk ``index``: written parts from the target, the rest from ``old``."""
    if len(parts) == 1 and parts[0].length == length and parts[0].offset is not None:
        fh.seek(parts[0].offset)  # the common case: the whole chunk was written
        return fh.read(length), length
    covered = sum(p.length for p in parts) == length
    base = bytearray(bytes(length) if covered else old())
    for part in parts:
        rel = part.start - index * chunk_size
        if part.offset is None:
            base[rel : rel + part.length] = bytes(part.length)
        else:
            fh.seek(part.offset)
            base[rel : rel + part.length] = fh.read(part.length)
    return bytes(base), sum(p.length for p in parts)


def _pipeline(
    reads: Iterable[tuple[int, bytes, int]],
    chunks: list[str],
    store: ChunkStore,
    stats: BackupStats,
    progress: Callable[[float], None],
    total: int,
) -> None:
    """Store each (chunk index, bytes, bytes read) as ``reads`` yields it: reading stays in this
    thread, hashing, compressing and writing run on a few threads (hashlib and zstd release
    the GIL). ``chunks[index]`` gets each stored chunk's hash."""
    pending: deque[tuple[int, Future[tuple[str, int]]]] = deque()
    done = [0]

    def settle(limit: int) -> None:
        while len(pending) > limit:
            index, future = pending.popleft()
            chunks[index], written = future.result()
            stats.chunks_new += 1 if written else 0
            stats.bytes_written += written
            done[0] += 1
            progress(done[0] / max(1, total))

    with ThreadPoolExecutor(WORKERS) as pool:
        for index, data, read in reads:
            stats.bytes_read += read
            pending.append((index, pool.submit(store.put, data)))
            settle(IN_FLIGHT)  # bounded memory: a few MiB in flight
        settle(0)


def _touched(ranges: list[tuple[int, int]], chunk_size: int) -> list[int]:
    """Indices of the chunks that (start, length) ranges touch, in disk order."""
    touched: set[int] = set()
    for start, length in ranges:
        touched.update(range(start // chunk_size, -(-(start + length) // chunk_size)))
    return sorted(touched)


def _start(parent: DiskManifest | None, size: int, chunk_size: int) -> list[str]:
    """Chunk list to fill in: the parent's (same size) or all zeros."""
    count = (size + chunk_size - 1) // chunk_size
    inherited = parent.chunks if parent and parent.size == size else None
    return list(inherited) if inherited else [ZERO] * count


def ingest(
    target: Path,
    size: int,
    store: ChunkStore,
    parent: DiskManifest | None,
    stats: BackupStats,
    progress: Callable[[float], None] = lambda _: None,
    chunk_size: int = CHUNK_SIZE,
) -> list[str]:
    """Chunk hashes of the whole disk: written ranges of the qcow2 ``target``, the rest from
    ``parent`` (without a parent, unwritten ranges are zeros: a whole-disk copy leaves only
    zero ranges unwritten)."""
    chunks = _start(parent, size, chunk_size)
    grouped = sorted(_by_chunk(written_extents(target), chunk_size).items())
    with open(target, "rb") as fh:

        def reads() -> Iterator[tuple[int, bytes, int]]:
            for index, parts in grouped:
                length = min(chunk_size, size - index * chunk_size)
                old = functools.partial(store.get, chunks[index], length)
                data, read = _assemble(fh, index, parts, length, chunk_size, old)
                yield index, data, read

        _pipeline(reads(), chunks, store, stats, progress, len(grouped))
    stats.chunks_total += len(chunks)
    return chunks


def ingest_ranges(
    read_ahead: Callable[[Iterable[tuple[int, int]]], Iterator[bytes]],
    ranges: list[tuple[int, int]],
    size: int,
    store: ChunkStore,
    parent: DiskManifest | None,
    stats: BackupStats,
    progress: Callable[[float], None] = lambda _: None,
    chunk_size: int = CHUNK_SIZE,
) -> list[str]:
    """Chunk hashes of the whole disk: every chunk touching one of ``ranges`` (start, length)
    read whole from a point-in-time view of the disk (``read_ahead`` yields the bytes of each
    (offset, length) span in order), the rest from ``parent`` (zeros without one)."""
    chunks = _start(parent, size, chunk_size)
    wanted = _touched(ranges, chunk_size)
    spans = [(i * chunk_size, min(chunk_size, size - i * chunk_size)) for i in wanted]
    reads = zip(wanted, read_ahead(spans), (n for _, n in spans), strict=True)
    _pipeline(reads, chunks, store, stats, progress, len(wanted))
    stats.chunks_total += len(chunks)
    return chunks
