"""Checks that a directory can hold shared disks: the marker file every host reads
back, and the lock probe (QEMU's image locking uses open-file-description byte locks).

Owns the marker file's name and format and the probe file. Must not know the store:
callers compare the token they read with the one the store keeps.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import secrets
import struct
from pathlib import Path

MARKER = ".virtfleet-pool"
LOCK_PROBE = ".virtfleet-lock-probe"
# struct flock on Linux x86-64/aarch64: l_type, l_whence, l_start, l_len, l_pid (+pad)
_FLOCK = "hhqqi4x"


def write_marker(root: Path, pool: str) -> str:
    """Write a new random token for ``pool`` into ``root``'s marker file; the token."""
    token = secrets.token_hex(16)
    tmp = root / f"{MARKER}.{token[:8]}.tmp"
    tmp.write_text(json.dumps({"pool": pool, "token": token}))
    os.replace(tmp, root / MARKER)
    return token


def read_marker(root: Path) -> tuple[str, str] | None:
    """(pool, token) of ``root``'s marker file; None if there is none or it is unreadable."""
    try:
        data = json.loads((root / MARKER).read_text())
        return str(data["pool"]), str(data["token"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def remove_marker(root: Path) -> None:
    with contextlib.suppress(OSError):
        (root / MARKER).unlink()


def locks_work(root: Path, tag: str) -> tuple[bool, str]:
    """Whether OFD byte locks on ``root``'s filesystem exclude a second opener, as QEMU
    needs to keep two writers off one disk: (ok, why not). ``tag`` (the host) names the
    probe file, so hosts probing at once do not see each other's locks."""
    path = root / f"{LOCK_PROBE}-{tag}"
    try:
        return _probe(path)
    finally:
        with contextlib.suppress(OSError):
            path.unlink()


def _probe(path: Path) -> tuple[bool, str]:
    try:
        first = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as err:
        return False, f"cannot open a probe file: {err.strerror}"
    second = -1
    try:
        second = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        if not _lock(first, fcntl.F_WRLCK):
            return False, "the filesystem refuses byte-range locks"
        if _lock(second, fcntl.F_WRLCK):
            return False, "a second writer's lock was not refused"
        _lock(first, fcntl.F_UNLCK)
        if not _lock(second, fcntl.F_WRLCK):
            return False, "a released lock stayed held"
        return True, ""
    except OSError as err:
        return False, f"lock probe failed: {err.strerror}"
    finally:
        os.close(first)
        if second >= 0:
            os.close(second)


def _lock(fd: int, kind: int) -> bool:
    """F_OFD_SETLK on the first byte; False if another description holds it."""
    try:
        fcntl.fcntl(fd, fcntl.F_OFD_SETLK, struct.pack(_FLOCK, kind, os.SEEK_SET, 0, 1, 0))
    except OSError as err:
        if err.errno in (errno.EAGAIN, errno.EACCES):
            return False
        raise
    return True
