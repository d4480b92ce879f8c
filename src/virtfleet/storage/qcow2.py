"""Writes an empty qcow2 v3 overlay in-process: the layout ``qemu-img create -b -F qcow2`` makes.

Owns only that byte layout (qcow2 spec, docs/interop/qcow2.txt in QEMU): cluster 0
holds the header, the backing-format extension and the backing file name;
cluster 1 the refcount table; cluster 2 one refcount block; cluster 3 the L1
table (all L2 entries unallocated, so every read goes to the backing file).
Skipping the qemu-img fork makes a linked clone ~1 ms instead of ~15 ms.
Must not handle anything but that empty overlay (no data, no snapshots).
"""

from __future__ import annotations

import math
import os
import struct
from pathlib import Path

from virtfleet.errors import ImageError, InvalidInputError

MAGIC = b"QFI\xfb"
CLUSTER_BITS = 16
CLUSTER = 1 << CLUSTER_BITS
HEADER_LENGTH = 112  # v3 header incl. the compression-type byte, padded to 8
EXT_BACKING_FORMAT = 0xE2792ACA
MAX_BACKING_NAME = 1023  # the spec's limit
MAX_L1_ENTRIES = CLUSTER // 8  # the L1 table must fit its one cluster (<= 4 TiB)


def write_overlay(dest: Path, backing: Path, virtual_size: int) -> None:
    """Create ``dest`` (must not exist) as an empty overlay over qcow2 ``backing``."""
    name = os.fsencode(str(backing))
    if not backing.is_absolute() or len(name) > MAX_BACKING_NAME:
        raise InvalidInputError(f"backing path must be absolute and short: {backing}")
    l1_entries = max(1, math.ceil(virtual_size / (CLUSTER * (CLUSTER // 8))))
    if virtual_size <= 0 or l1_entries > MAX_L1_ENTRIES:
        raise InvalidInputError(f"unsupported overlay size {virtual_size}")
    cluster0 = _header(virtual_size, l1_entries, len(name))
    cluster0 += _extension(EXT_BACKING_FORMAT, b"qcow2") + _extension(0, b"") + name
    refcount_table = struct.pack(">Q", 2 * CLUSTER)
    refcount_block = struct.pack(">4H", 1, 1, 1, 1)  # clusters 0-3 are in use
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
    try:
        os.pwrite(fd, cluster0, 0)
        os.pwrite(fd, refcount_table, CLUSTER)
        os.pwrite(fd, refcount_block, 2 * CLUSTER)
        os.pwrite(fd, bytes(8 * l1_entries), 3 * CLUSTER)
    except BaseException:
        os.close(fd)
        dest.unlink(missing_ok=True)
        raise
    os.close(fd)


def virtual_size(path: Path) -> int:
    """The virtual size a qcow2 file's header gives (``ImageError`` if it is no qcow2)."""
    with path.open("rb") as f:
        head = f.read(32)
    if len(head) < 32 or head[:4] != MAGIC:
        raise ImageError(f"{path.name} is not a qcow2 image")
    return int(struct.unpack_from(">Q", head, 24)[0])


def _header(virtual_size: int, l1_entries: int, name_len: int) -> bytes:
    backing_offset = HEADER_LENGTH + 16 + 8  # after the two extensions
    return struct.pack(
        ">4sIQIIQIIQQIIQQQQII8x",
        MAGIC, 3, backing_offset, name_len, CLUSTER_BITS, virtual_size,
        0,  # no encryption
        l1_entries, 3 * CLUSTER,  # L1 table
        CLUSTER, 1,  # refcount table: one cluster
        0, 0,  # no snapshots
        0, 0, 0,  # incompatible, compatible, autoclear features
        4, HEADER_LENGTH,  # 16-bit refcounts; then compression type zlib + padding
    )  # fmt: skip


def _extension(kind: int, data: bytes) -> bytes:
    return struct.pack(">II", kind, len(data)) + data + bytes(-len(data) % 8)
