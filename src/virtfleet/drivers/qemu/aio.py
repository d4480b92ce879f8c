"""Which I/O engine QEMU's file nodes use: ``io_uring`` when the kernel allows it and the
QEMU binary links liburing, else QEMU's default thread pool.

Why it matters: with the thread pool every request (a read, a flush, a lock probe) is
handed to a worker thread and its completion back to the main loop. Activating the block
nodes at the end of a memory snapshot (``cont``) issues hundreds of small metadata reads
one after the other; on a loaded host each hand-off waited for a core (~10 ms), which made
the guest's pause grow with every layer of its disks (docs/benchmarks.md, issue 26).
Decided once per daemon; reads files only.
"""

from __future__ import annotations

import mmap
import shutil
from pathlib import Path

IO_URING_SYSCTL = Path("/proc/sys/kernel/io_uring_disabled")
LIBURING = b"liburing.so"  # in the binary's list of needed libraries


def choose(binary: str, sysctl: Path = IO_URING_SYSCTL) -> str:
    """``io_uring`` if usable by an unprivileged QEMU built with it, else ``threads``."""
    return "io_uring" if _kernel_allows(sysctl) and _links_liburing(binary) else "threads"


def _kernel_allows(sysctl: Path) -> bool:
    try:
        return sysctl.read_text().strip() == "0"  # 1: privileged only; 2: off
    except FileNotFoundError:
        return Path("/proc/sys/kernel").is_dir()  # kernels before 6.6 have no switch
    except OSError:
        return False


def _links_liburing(binary: str) -> bool:
    path = shutil.which(binary)
    if path is None:
        return False
    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            return m.find(LIBURING) != -1
    except (OSError, ValueError):  # unreadable, or empty (mmap of 0 bytes)
        return False
