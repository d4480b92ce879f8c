"""Refusing disk images whose metadata points at other files, before and after qemu-img reads them.

Owns the "self-contained" rule for untrusted images: a qcow2 must have no
backing file and no external data file, a VMDK must be one monolithicSparse or
streamOptimized file (no descriptor naming extents, no parent), and no image
may name a ``json:`` or protocol filename. ``check_header`` reads the headers
itself (qcow2 spec: docs/interop/qcow2.txt; VMware "Virtual Disk Format 5.0"),
``check_info`` re-checks what ``qemu-img info`` reports. Must not run qemu-img.
"""

from __future__ import annotations

import os
import re
import struct
from typing import Any

from virtfleet.errors import UnsafeImageError

QCOW2_MAGIC = b"QFI\xfb"
VMDK4_MAGIC = b"KDMV"
VMDK3_MAGIC = b"COWD"
QCOW2_EXT_DATA_FILE = 0x44415441  # header extension "external data file name"
QCOW2_INCOMPAT_DATA_FILE = 1 << 2
SELF_CONTAINED_VMDK = ("monolithicSparse", "streamOptimized")
_DESCRIPTOR = re.compile(rb"^\s*createType\s*=", re.MULTILINE | re.IGNORECASE)
_CREATE_TYPE = re.compile(rb'^\s*createType\s*=\s*"?([A-Za-z0-9_]+)', re.MULTILINE | re.IGNORECASE)
_PARENT = re.compile(rb"^\s*parentFileNameHint\s*=", re.MULTILINE | re.IGNORECASE)
HEAD_BYTES = 64 << 10


def refuse(name: str, what: str) -> UnsafeImageError:
    return UnsafeImageError(
        f"{name} refers to another file ({what}); only self-contained images are imported"
    )


def check_header(fd: int, name: str, fmt: str | None) -> None:
    """Raise ``UnsafeImageError`` if the headers of the image open at ``fd`` name any other
    file. ``fmt`` "raw" means the bytes are disk content and are not interpreted."""
    if fmt == "raw":
        return
    head = os.pread(fd, HEAD_BYTES, 0)
    if head[:4] == QCOW2_MAGIC and fmt in (None, "qcow2"):
        _check_qcow2(fd, head, name)
    elif head[:4] == VMDK4_MAGIC and fmt in (None, "vmdk"):
        _check_vmdk4(fd, head, name)
    elif head[:4] == VMDK3_MAGIC and fmt in (None, "vmdk"):
        raise refuse(name, "a VMware 3 (COWD) disk; convert it to monolithicSparse first")
    elif fmt in (None, "vmdk") and _DESCRIPTOR.search(head):
        raise refuse(name, "a VMDK descriptor naming extent files")


def _check_qcow2(fd: int, head: bytes, name: str) -> None:
    if len(head) < 72:
        return  # too short to be a qcow2: qemu-img refuses it
    version, backing_offset, backing_size = struct.unpack_from(">IQI", head, 4)
    if backing_offset or backing_size:
        raise refuse(name, "a backing file")
    if version < 3 or len(head) < 104:
        return  # version 2 has neither feature bits nor a data file
    (incompatible,) = struct.unpack_from(">Q", head, 72)
    if incompatible & QCOW2_INCOMPAT_DATA_FILE:
        raise refuse(name, "an external data file")
    (header_length,) = struct.unpack_from(">I", head, 100)
    _check_qcow2_extensions(fd, max(header_length, 104), name)


def _check_qcow2_extensions(fd: int, offset: int, name: str) -> None:
    """Walk the header extensions (type, length, data padded to 8) up to the end marker."""
    for _ in range(1024):
        raw = os.pread(fd, 8, offset)
        if len(raw) < 8:
            return
        kind, length = struct.unpack(">II", raw)
        if kind == 0:
            return
        if kind == QCOW2_EXT_DATA_FILE:
            raise refuse(name, "an external data file")
        offset += 8 + (length + 7) // 8 * 8


def _check_vmdk4(fd: int, head: bytes, name: str) -> None:
    if len(head) < 44:
        return
    capacity, _, desc_offset, desc_size = struct.unpack_from("<QQQQ", head, 12)
    if capacity == 0 and desc_offset:
        # qemu then reads the embedded descriptor as a descriptor file: extents by name
        raise refuse(name, "a VMDK header whose descriptor names extent files")
    if not desc_offset or not desc_size:
        return
    descriptor = os.pread(fd, min(desc_size << 9, 1 << 20), desc_offset << 9)
    if _PARENT.search(descriptor):
        raise refuse(name, "a parent disk (parentFileNameHint)")
    kind = _CREATE_TYPE.search(descriptor)
    if kind and kind.group(1).decode() not in SELF_CONTAINED_VMDK:
        raise refuse(name, f"VMDK type {kind.group(1).decode()!r}")


def check_info(info: dict[str, Any], opened_as: str, name: str) -> None:
    """Raise ``UnsafeImageError`` if ``qemu-img info`` of the image (opened by the name
    ``opened_as``) shows a backing file, data file, foreign extent or child node."""
    if info.get("backing-filename") or info.get("full-backing-filename"):
        raise refuse(name, f"backing file {str(info.get('backing-filename'))[:200]!r}")
    specific = info.get("format-specific") or {}
    data = specific.get("data") or {}
    if data.get("data-file"):
        raise refuse(name, f"external data file {str(data['data-file'])[:200]!r}")
    if specific.get("type") == "vmdk":
        kind = str(data.get("create-type", ""))
        if kind not in SELF_CONTAINED_VMDK:
            raise refuse(name, f"VMDK type {kind!r}")
        for extent in data.get("extents") or []:
            if extent.get("filename") != opened_as:
                raise refuse(name, f"extent {str(extent.get('filename'))[:200]!r}")
    _check_children(info, opened_as, name)


def _check_children(info: dict[str, Any], opened_as: str, name: str) -> None:
    for child in info.get("children") or []:
        child_info = child.get("info") or {}
        filename = str(child_info.get("filename", ""))
        if filename != opened_as:
            raise refuse(name, f"{child.get('name', 'a child node')} {filename[:200]!r}")
        _check_children(child_info, opened_as, name)
