"""The runtime's ``--console-socket``: how a container's pty master reaches us.

The runtime creates the pty (``terminal: true``) and sends its master over a Unix
socket we listen on (OCI runtime spec, runtime.md "console socket"). One socket
serves every start of a driver: a connection belongs to the start that spawned
the connecting process or an ancestor of it (``SO_PEERCRED``), so a start binds
no socket of its own (~0.4 ms). The kernel also names the process that sent the
master (``SO_PASSCRED``): with runc that is the container's init. Connections
nobody waits for are closed. Must not know about runtimes, bundles or instances.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import os
import socket
import struct
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from virtfleet.errors import ProcessError

_INT = array.array("i").itemsize
_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid
_ANCILLARY = socket.CMSG_SPACE(4 * _INT) + socket.CMSG_SPACE(_UCRED.size)
MAX_GENERATIONS = 4  # how far up from the connecting process a spawned runtime is looked for


def bind(path: Path, kind: socket.SocketKind, backlog: int) -> socket.socket:
    """A Unix socket listening at ``path`` (replacing a stale one), mode 0600."""
    path.unlink(missing_ok=True)
    sock = socket.socket(socket.AF_UNIX, kind)
    try:
        sock.bind(str(path))
        path.chmod(0o600)
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


@dataclass(frozen=True)
class Master:
    """A pty master the runtime sent, and the pid of the process that sent it."""

    fd: int
    sender: int | None


class ConsoleSocket:
    """The one listening socket of a driver's run directory, bound on first use."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiting: dict[int, asyncio.Future[socket.socket]] = {}

    def listening(self) -> Path:
        """The path to give the runtime; listened on from now on."""
        loop = asyncio.get_running_loop()
        if self._sock is None:
            self._sock = bind(self.path, socket.SOCK_STREAM, 64)
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
            self._sock.setblocking(False)
        if self._loop is not loop:  # first use, or a new loop (tests run several)
            loop.add_reader(self._sock.fileno(), self._accept)
            self._loop = loop
        return self.path

    def receive(self, pid: int, timeout_s: float = 10.0) -> Coroutine[Any, Any, Master]:
        """The master that process ``pid`` connects to send (expected from this call
        on, so call it before the loop runs again after spawning ``pid``)."""
        connected: asyncio.Future[socket.socket] = asyncio.get_running_loop().create_future()
        self._waiting[pid] = connected
        return self._receive(pid, connected, timeout_s)

    async def _receive(
        self, pid: int, connected: asyncio.Future[socket.socket], timeout_s: float
    ) -> Master:
        try:
            async with asyncio.timeout(timeout_s):
                conn = await connected
                fds, sender = await _recv_fds(conn)
        finally:
            self._waiting.pop(pid, None)
            if connected.done() and not connected.cancelled():
                connected.result().close()
        if not fds:
            raise ProcessError("the runtime sent no console fd")
        for extra in fds[1:]:
            os.close(extra)
        os.set_inheritable(fds[0], False)  # SCM_RIGHTS fds come inheritable: no child gets it
        return Master(fds[0], sender)

    def _accept(self) -> None:
        assert self._sock is not None
        try:
            conn, _ = self._sock.accept()
        except OSError:  # gone before we got to it (or a spurious wake-up)
            return
        peer = _UCRED.unpack(conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
        connected = self._waiter_for(peer[0])
        if connected is None or connected.done():
            conn.close()  # nobody (any more) waits for this process's console
            return
        conn.setblocking(False)
        connected.set_result(conn)

    def _waiter_for(self, pid: int) -> asyncio.Future[socket.socket] | None:
        """The start waiting for ``pid`` or for one of its ancestors: a runtime may
        connect from a child of the process we spawned (runc connects itself)."""
        for _ in range(MAX_GENERATIONS):
            if (connected := self._waiting.get(pid)) is not None:
                return connected
            pid = _parent(pid)
            if pid <= 1:
                break
        return None

    def close(self) -> None:
        if self._sock is None:
            return
        if self._loop is not None and not self._loop.is_closed():
            with contextlib.suppress(ValueError, OSError):
                self._loop.remove_reader(self._sock.fileno())
        self._sock.close()
        self._sock, self._loop = None, None
        self.path.unlink(missing_ok=True)


async def _recv_fds(conn: socket.socket) -> tuple[list[int], int | None]:
    """The fds (SCM_RIGHTS) of the first message on non-blocking ``conn`` and the pid of
    its sender (SCM_CREDENTIALS); [] at EOF."""
    loop = asyncio.get_running_loop()
    while True:
        try:
            return _recvmsg_fds(conn)
        except BlockingIOError:
            readable: asyncio.Future[None] = loop.create_future()
            loop.add_reader(conn.fileno(), _resolve, readable)
            try:
                await readable
            finally:
                loop.remove_reader(conn.fileno())


def _recvmsg_fds(conn: socket.socket) -> tuple[list[int], int | None]:
    _, ancillary, _, _ = conn.recvmsg(4096, _ANCILLARY)
    fds: list[int] = []
    sender = None
    for level, kind, data in ancillary:
        if level != socket.SOL_SOCKET:
            continue
        if kind == socket.SCM_RIGHTS:
            fds += array.array("i", data[: len(data) - len(data) % _INT])
        elif kind == socket.SCM_CREDENTIALS and len(data) >= _UCRED.size:
            sender = _UCRED.unpack_from(data)[0]
    return fds, sender


def _parent(pid: int) -> int:
    """``pid``'s parent (0 if it is gone): field 4 of /proc/PID/stat, after the name."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return 0
    return int(stat.rsplit(b")", 1)[1].split()[1])


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
