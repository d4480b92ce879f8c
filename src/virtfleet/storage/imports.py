"""Importing foreign disk images (raw, qcow2, vmdk, vhdx, vpc, vdi) into the store as qcow2.

Owns the checks a foreign file must pass before conversion (a format qemu-img
reads and we accept, no backing chain loop, no backing file outside the store,
no corruption) and the conversion itself into a temporary file that only an
intact result replaces. Must not write store metadata: ``ImageStore`` records
the result.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from virtfleet.errors import ImageError, InvalidInputError, NotFoundError
from virtfleet.storage import qemuimg
from virtfleet.storage.qemuimg import Progress

#: qemu-img format names we import ("vhd" is qemu's "vpc").
FORMATS = ("raw", "qcow2", "vmdk", "vhdx", "vpc", "vdi")
ALIASES = {"vhd": "vpc", "img": "raw"}
_CHECKABLE = ("qcow2", "vmdk", "vhdx", "vdi")


def normalize_format(fmt: str | None) -> str | None:
    if fmt is None:
        return None
    fmt = ALIASES.get(fmt.lower(), fmt.lower())
    if fmt not in FORMATS:
        known = ", ".join(FORMATS)
        raise InvalidInputError(f"unsupported image format {fmt!r}; use one of {known}")
    return fmt


async def probe(src: Path, store_root: Path, fmt: str | None = None) -> dict[str, Any]:
    """Validate ``src`` for import and return its ``qemu-img info``; raise on bad input.

    ``NotFoundError`` (no such file), ``InvalidInputError`` (unsupported format),
    ``ImageError`` (unreadable, corrupt, backing loop, backing file outside the store).
    """
    fmt = normalize_format(fmt)
    if not src.is_file():
        raise NotFoundError(f"no image file at {src}")
    try:
        chain = await qemuimg.info(src, fmt, chain=True)
    except ImageError as err:
        if "loop" in err.message or "infinite" in err.message:
            raise ImageError(f"backing chain of {src.name} loops back on itself") from err
        raise
    head = chain[0]
    found = str(head.get("format", ""))
    if found not in FORMATS:
        raise InvalidInputError(f"unsupported image format {found!r} in {src.name}")
    for layer in chain:
        _check_backing(layer, store_root)
    if found in _CHECKABLE:
        await qemuimg.check(src, found)
    return head


def _check_backing(layer: dict[str, Any], store_root: Path) -> None:
    backing = layer.get("full-backing-filename") or layer.get("backing-filename")
    if not backing:
        return
    resolved = Path(os.path.realpath(backing))
    if not resolved.is_relative_to(os.path.realpath(store_root)):
        raise ImageError(
            f"{Path(str(layer.get('filename', '?'))).name} has a backing file outside the "
            f"image store ({backing}); flatten it first (qemu-img convert)"
        )


async def convert_into(src: Path, fmt: str, dest: Path, progress: Progress | None = None) -> None:
    """Convert ``src`` to a qcow2 at ``dest``; the file appears only when complete."""
    tmp = dest.with_name(f".{dest.name}.importing")
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        await qemuimg.convert(src, fmt, tmp, "qcow2", progress)
        await qemuimg.check(tmp, "qcow2")
        os.replace(tmp, dest)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
