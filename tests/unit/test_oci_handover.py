"""The runtime's side of ``--console-socket`` (drivers/oci/handover.py): one socket for
all starts, a connection going to the start that spawned the connecting process; the
master fd arrives with the pid of the process that sent it (the kernel's
SCM_CREDENTIALS, not something the sender claims); ``is_namespace_init`` tells a pid
namespace's init from any other process."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from virtfleet.drivers.oci.handover import ConsoleSocket
from virtfleet.drivers.oci.runtime import is_namespace_init
from virtfleet.errors import ProcessError

# Connects to the socket given, sends its stdin's fd ("fd") or none ("none"), then
# prints "closed" once the other side hangs up.
SENDER = """
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
try:
    socket.send_fds(s, [b"/dev/ptmx"], [0] if sys.argv[2] == "fd" else [])
    print("closed" if s.recv(1) == b"" else "open", flush=True)
except (BrokenPipeError, ConnectionResetError):
    print("closed", flush=True)
"""


@pytest.fixture
async def consoles(tmp_path: Path) -> AsyncIterator[ConsoleSocket]:
    sock = ConsoleSocket(tmp_path / ".console.sock")
    yield sock
    sock.close()
    assert not sock.path.exists()


def _argv(path: Path, what: str = "fd") -> list[str]:
    return [sys.executable, "-c", SENDER, str(path), what]


def _sender(path: Path, what: str) -> subprocess.Popen[bytes]:
    return _spawn(_argv(path, what))


def _spawn(argv: list[str], stderr: int | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr)


async def _closed(proc: subprocess.Popen[bytes]) -> bool:
    out, _ = await asyncio.to_thread(proc.communicate, timeout=10)
    return out == b"closed\n"


async def test_the_master_comes_with_its_senders_pid(consoles: ConsoleSocket) -> None:
    proc = _sender(consoles.listening(), "fd")
    master = await consoles.receive(proc.pid)
    assert master.sender == proc.pid and master.sender != os.getpid()
    assert not os.get_inheritable(master.fd)
    assert proc.stdin is not None
    proc.stdin.write(b"through the copy\n")
    proc.stdin.flush()
    with os.fdopen(master.fd, "rb") as copy:  # the sender's stdin pipe, passed over
        assert copy.readline() == b"through the copy\n"
    assert await _closed(proc)  # we hung up once we had it


async def test_a_process_nobody_waits_for_is_hung_up_on(consoles: ConsoleSocket) -> None:
    path = consoles.listening()
    stranger, expected = _sender(path, "fd"), _sender(path, "fd")
    receiving = consoles.receive(expected.pid)
    assert await _closed(stranger)
    master = await receiving
    assert master.sender == expected.pid
    os.close(master.fd)
    assert await _closed(expected)


async def test_a_child_of_the_spawned_process_may_send(consoles: ConsoleSocket) -> None:
    """As a runtime that forks before it connects: the start that spawned the parent."""
    # The parent names its child on stderr: the child may be gone (it exits once we hang
    # up) by the time /proc could be read, so /proc cannot tell which process it was.
    wrapper = (
        f"import subprocess, sys; p = subprocess.Popen({_argv(consoles.listening())}); "
        "print(p.pid, file=sys.stderr, flush=True); sys.exit(p.wait())"
    )
    proc = _spawn([sys.executable, "-c", wrapper], stderr=subprocess.PIPE)
    master = await consoles.receive(proc.pid)
    assert proc.stderr is not None
    child = int(await asyncio.to_thread(proc.stderr.readline))
    assert master.sender == child and child != proc.pid
    os.close(master.fd)
    assert await _closed(proc)


async def test_no_fd_and_no_connection_are_errors(consoles: ConsoleSocket) -> None:
    proc = _sender(consoles.listening(), "none")
    with pytest.raises(ProcessError, match="sent no console fd"):
        await consoles.receive(proc.pid)
    assert await _closed(proc)
    with pytest.raises(TimeoutError):
        await consoles.receive(proc.pid, timeout_s=0.05)
    assert consoles._waiting == {}  # nothing left expected


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
