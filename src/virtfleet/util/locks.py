"""Host-wide locks between daemons: an exclusive ``flock`` on a file in a directory.

Owns only the locking; what the directory holds (lease files) is the caller's.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def dir_lock(directory: Path) -> Iterator[None]:
    """Hold ``directory/.lock`` exclusively (made 0700/0600 if missing) for the block."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # one allocator at a time, across daemons
        yield
    finally:
        os.close(fd)
