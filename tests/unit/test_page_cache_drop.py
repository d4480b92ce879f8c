"""vmstate.drop_page_cache: drops the host page cache of the regular files a process holds
(what QEMU's ``cont`` would otherwise do inside the guest pause), never touches sockets,
pipes or devices, and counts each file once."""

from __future__ import annotations

import ctypes
import mmap
import os
import socket
from pathlib import Path

from virtfleet.drivers.qemu import vmstate

PAGE = mmap.PAGESIZE


def resident_pages(path: Path) -> int:
    """Pages of ``path`` in the page cache (``mincore`` on a private mapping of it)."""
    libc = ctypes.CDLL(None, use_errno=True)
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_COPY) as m:
        pages = (len(m) + PAGE - 1) // PAGE
        vec = (ctypes.c_ubyte * pages)()
        addr = ctypes.addressof(ctypes.c_char.from_buffer(m))
        assert libc.mincore(ctypes.c_void_p(addr), ctypes.c_size_t(len(m)), vec) == 0
        count = sum(v & 1 for v in vec)
        del addr
        return count


def test_drops_the_cache_of_files_the_process_holds(tmp_path: Path) -> None:
    image = tmp_path / "disk.img"
    image.write_bytes(os.urandom(4 * 2**20))
    fd = os.open(image, os.O_RDONLY)
    try:
        os.fsync(fd)  # clean pages: only those can go
        os.read(fd, 4 * 2**20)
        assert resident_pages(image) > 0
        assert vmstate.drop_page_cache(os.getpid()) >= 1
        assert resident_pages(image) == 0
    finally:
        os.close(fd)


def test_counts_each_file_once_and_skips_pipes_and_sockets(tmp_path: Path) -> None:
    before = vmstate.drop_page_cache(os.getpid())
    image = tmp_path / "disk.img"
    image.write_bytes(b"x" * PAGE)
    fds = [os.open(image, os.O_RDONLY), os.open(image, os.O_RDWR), *os.pipe()]
    pair = socket.socketpair()
    try:
        assert vmstate.drop_page_cache(os.getpid()) == before + 1
    finally:
        for fd in fds:
            os.close(fd)
        pair[0].close()
        pair[1].close()


def test_a_vanished_process_is_no_error() -> None:
    assert vmstate.drop_page_cache(2**22 + 1) == 0  # above the kernel's pid_max limit
