"""A qcow2 file's backing chain, read from the image headers (qcow2 spec, docs/interop/qcow2.txt).

A VM's QEMU runs chrooted into an empty directory under its own uid, so a disk
hot-added later must arrive with every file of its chain already open: this
module says which files those are (and their formats). It only reads headers;
it never opens an image for QEMU and never runs ``qemu-img``.
"""

from __future__ import annotations

import struct
from pathlib import Path

from virtfleet.errors import ImageError

MAGIC = b"QFI\xfb"
BACKING_FORMAT_EXT = 0xE2792ACA
MAX_DEPTH = 16  # deeper chains are refused, as is a loop
_HEADER = struct.Struct(">4sIQI")  # magic, version, backing_file_offset, backing_file_size


def chain(path: Path) -> list[tuple[Path, str]]:
    """The backing files below ``path`` as (file, format), nearest first; [] if none."""
    found: list[tuple[Path, str]] = []
    current = path
    while (link := _backing(current)) is not None:
        if len(found) >= MAX_DEPTH or any(p == link[0] for p, _ in found):
            raise ImageError(f"backing chain of {path.name} is too deep or loops")
        found.append(link)
        if link[1] != "qcow2":
            break  # a raw (or other) base has no backing of its own
        current = link[0]
    return found


def _backing(path: Path) -> tuple[Path, str] | None:
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
            magic, version, offset, size = _HEADER.unpack_from(head)
            if magic != MAGIC:
                raise ImageError(f"{path.name} is not a qcow2 image")
            if not offset:
                return None
            f.seek(offset)
            name = f.read(size).decode()
    except (OSError, struct.error, UnicodeDecodeError) as err:
        raise ImageError(f"cannot read the qcow2 header of {path.name}: {err}") from err
    file = Path(name) if name.startswith("/") else path.parent / name
    return file, _backing_format(head, version)


def _backing_format(head: bytes, version: int) -> str:
    """The format named in the backing-format header extension; qcow2 when absent."""
    pos = 72 if version < 3 else struct.unpack_from(">I", head, 100)[0]
    while pos + 8 <= len(head):
        kind, length = struct.unpack_from(">II", head, pos)
        if kind == 0:
            break
        if kind == BACKING_FORMAT_EXT:
            return head[pos + 8 : pos + 8 + length].decode(errors="replace")
        pos += 8 + (length + 7) // 8 * 8
    return "qcow2"
