"""The runtime's side of ``--console-socket``: the master fd arrives with the pid of the
process that sent it (the kernel's SCM_CREDENTIALS, not something the sender claims),
and ``is_namespace_init`` tells a pid namespace's init from any other process."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from virtfleet.drivers.oci import console
from virtfleet.drivers.oci.runtime import is_namespace_init
from virtfleet.errors import ProcessError

# Connects to the socket given and sends its stdin's fd, then waits to be killed.
SENDER = """
import socket, sys, time
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
socket.send_fds(s, [b"/dev/ptmx"], [0] if sys.argv[2] == "fd" else [])
time.sleep(30)
"""


def _sender(path: Path, what: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", SENDER, str(path), what], stdin=subprocess.PIPE)


async def test_the_master_comes_with_its_senders_pid(tmp_path: Path) -> None:
    path = tmp_path / "console.sock"
    sock = console.listen(path)
    proc = _sender(path, "fd")
    try:
        master = await console.receive_master(sock)
        assert master.sender == proc.pid and master.sender != os.getpid()
        assert not os.get_inheritable(master.fd)
        assert proc.stdin is not None
        proc.stdin.write(b"through the copy\n")
        proc.stdin.flush()
        with os.fdopen(master.fd, "rb") as copy:  # the sender's stdin pipe, passed over
            assert copy.readline() == b"through the copy\n"
    finally:
        proc.kill()
        proc.wait()
        sock.close()


async def test_a_message_without_an_fd_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "console.sock"
    sock = console.listen(path)
    proc = _sender(path, "none")
    try:
        with pytest.raises(ProcessError, match="sent no console fd"):
            await console.receive_master(sock, timeout_s=10)
    finally:
        proc.kill()
        proc.wait()
        sock.close()


def test_is_namespace_init() -> None:
    assert not is_namespace_init(os.getpid())  # a process of this (the test's) namespace
    assert not is_namespace_init(2**22 + 1)  # above pid_max: no such process
    if os.geteuid() != 0:
        pytest.skip("a new pid namespace needs root")
    child = subprocess.Popen(["unshare", "--pid", "--fork", "--kill-child", "sleep", "30"])
    try:
        init = _child_of(child.pid)
        assert is_namespace_init(init) and not is_namespace_init(child.pid)
    finally:
        child.kill()
        child.wait()


def _child_of(pid: int) -> int:
    """The one child of ``pid`` (unshare's forked ``sleep``, pid 1 of its namespace)."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    for _ in range(500):
        found = children.read_text().split()
        if found:
            return int(found[0])
        time.sleep(0.01)
    raise AssertionError("unshare forked no child")
