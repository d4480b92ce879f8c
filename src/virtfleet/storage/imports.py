"""Importing untrusted foreign disk images (raw, qcow2, vmdk, vhdx, vpc, vdi) as qcow2.

Owns the checks a foreign file must pass before conversion (a format qemu-img
reads and we accept, self-contained: no backing file, data file or extent
naming another file, no corruption) and the conversion itself into a work file
that only an intact result replaces. qemu-img only ever sees the file through
an inherited descriptor, in the ``Jail``. Must not write store metadata:
``ImageStore`` records the result.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from virtfleet.errors import InvalidInputError
from virtfleet.storage import imagemeta, qemuimg
from virtfleet.storage.hostpaths import HostPaths, copy_sparse
from virtfleet.storage.qemuimg import Progress, fd_path

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


async def probe(fd: int, name: str, jail: qemuimg.Jail, fmt: str | None = None) -> dict[str, Any]:
    """Validate the image open at ``fd`` (shown as ``name``); return its ``qemu-img info``.

    ``InvalidInputError`` (unsupported format), ``UnsafeImageError`` (names another
    file), ``ImageError`` (unreadable, corrupt). ``fd`` must be readable by the jail.
    """
    fmt = normalize_format(fmt)
    imagemeta.check_header(fd, name, fmt)
    opened = fd_path(fd)
    head = (await qemuimg.info(opened, fmt, jail=jail, fds=[fd], label=name))[0]
    found = str(head.get("format", ""))
    if found not in FORMATS:
        raise InvalidInputError(f"unsupported image format {found!r} in {name}")
    imagemeta.check_info(head, opened, name)
    if found in _CHECKABLE:
        await qemuimg.check(opened, found, jail, [fd], name)
    return head


def readable(fd: int, paths: HostPaths) -> tuple[int, Path | None]:
    """``fd`` if the jailed user can reopen it and only the daemon's user can change it,
    else a private sparse copy (and its path, for the caller to remove): what was checked
    is then what gets converted, even if the owner rewrites the file meanwhile."""
    st = os.fstat(fd)
    fixed = st.st_uid == os.geteuid() and not st.st_mode & 0o022
    if fixed and paths.jail.can_read(fd):
        return fd, None
    copy, path = paths.work_file(".source")
    try:
        copy_sparse(fd, copy)
        os.fchmod(copy, 0o644)  # readable, not writable, by the jail; no path reaches it
    except BaseException:
        os.close(copy)
        path.unlink(missing_ok=True)
        raise
    return copy, path


async def convert_into(
    fd: int, name: str, fmt: str, dest: Path, paths: HostPaths, progress: Progress | None = None
) -> None:
    """Convert the image at ``fd`` to a qcow2 at ``dest``; the file appears only when complete."""
    out, tmp = paths.work_file(".importing", mode=_image_mode())
    try:
        paths.jail.lend(out)
        await qemuimg.convert(
            fd_path(fd), fmt, fd_path(out), "qcow2", progress,
            jail=paths.jail, fds=[fd, out], label=name,
        )  # fmt: skip
        await qemuimg.check(fd_path(out), "qcow2", paths.jail, [out], name)
        paths.jail.reclaim(out)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, dest)
    finally:
        os.close(out)
        with contextlib.suppress(OSError):
            tmp.unlink()


def _image_mode() -> int:
    """0644 under the process umask, as qemu-img itself used to create image files."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o644 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o600
