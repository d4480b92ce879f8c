"""Container consoles: the init's pty master, kept alive across agent restarts, and its relay.

The runtime creates the pty (``terminal: true``) and hands its master to us over
``--console-socket`` (OCI runtime spec, runtime.md "console socket"). So that the
pty outlives the agent (a closed master would hang up the container's console),
a tiny holder process (``sleep infinity``, started in its own session) keeps a
copy of the master; a restarted agent takes the copy back with
``pidfd_getfd(2)``. While the agent runs, ``ConsoleRelay`` appends everything the
container prints to ``console.log`` and serves the console on a Unix socket for
the existing console plumbing (service/console.py, api/routes/console.py).
Must not know about runtimes or instances beyond the paths it is given.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import socket
import subprocess
from pathlib import Path

from virtfleet.errors import ProcessError

SYS_PIDFD_GETFD = 438  # x86-64 syscall number (Linux >= 5.6)
HOLDER_ARGV = ("sleep", "infinity")
MAX_LOG_BYTES = 8 * 1024 * 1024  # the log restarts empty beyond this (a console is not a journal)


def listen(path: Path) -> socket.socket:
    """A listening Unix socket for the runtime's ``--console-socket``."""
    path.unlink(missing_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.listen(1)
    sock.setblocking(False)
    return sock


async def receive_master(sock: socket.socket, timeout_s: float = 10.0) -> int:
    """Accept the runtime's connection and take the pty master fd it sends (SCM_RIGHTS)."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(timeout_s):
        conn, _ = await loop.sock_accept(sock)
        with conn:
            conn.setblocking(False)  # read when the loop says so: no thread, never stalls
            fds = await _recv_fds(loop, conn)
    if not fds:
        raise ProcessError("the runtime sent no console fd")
    for extra in fds[1:]:
        os.close(extra)
    os.set_inheritable(fds[0], False)  # SCM_RIGHTS fds come inheritable: no other child gets it
    return fds[0]


async def _recv_fds(loop: asyncio.AbstractEventLoop, conn: socket.socket) -> list[int]:
    """The fds of the first message on non-blocking ``conn`` (SCM_RIGHTS); [] at EOF."""
    while True:
        try:
            _, fds, _, _ = socket.recv_fds(conn, 4096, 1)
        except BlockingIOError:
            readable: asyncio.Future[None] = loop.create_future()
            loop.add_reader(conn.fileno(), _resolve, readable)
            try:
                await readable
            finally:
                loop.remove_reader(conn.fileno())
            continue
        return fds


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def spawn_holder(master: int) -> int:
    """Start the process that keeps a copy of ``master`` open; return its pid."""
    proc = subprocess.Popen(
        HOLDER_ARGV,
        pass_fds=(master,),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # not in the agent's process group: survives its death
    )
    return proc.pid


def take_back(holder_pid: int, fd: int) -> int:
    """A copy of fd ``fd`` of the holder (pidfd_getfd); ``ProcessError`` if it is gone."""
    try:
        pidfd = os.pidfd_open(holder_pid)
    except OSError as err:
        raise ProcessError(f"console holder {holder_pid} is gone: {err.strerror}") from err
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        got = int(libc.syscall(SYS_PIDFD_GETFD, pidfd, fd, 0))
        if got < 0:
            errno = ctypes.get_errno()
            raise ProcessError(f"pidfd_getfd of console holder failed: {os.strerror(errno)}")
        return got
    finally:
        os.close(pidfd)


def end_holder(holder_pid: int | None) -> None:
    if holder_pid:
        with contextlib.suppress(ProcessLookupError):
            os.kill(holder_pid, signal.SIGKILL)


class ConsoleRelay:
    """Relays one pty master to a log file and to clients of a Unix socket."""

    def __init__(self, master: int, log: Path, sock_path: Path) -> None:
        self.master = master
        self.log = log
        self.sock_path = sock_path
        self._clients: set[asyncio.StreamWriter] = set()
        self._server: asyncio.AbstractServer | None = None
        self._logfile = log.open("ab", buffering=0)

    async def start(self) -> None:
        os.set_blocking(self.master, False)
        asyncio.get_running_loop().add_reader(self.master, self._on_output)
        self.sock_path.unlink(missing_ok=True)
        self._server = await asyncio.start_unix_server(self._serve, path=str(self.sock_path))
        self.sock_path.chmod(0o600)

    def _on_output(self) -> None:
        try:
            data = os.read(self.master, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:  # EIO: every slave end closed (the container is gone)
            asyncio.get_running_loop().remove_reader(self.master)
            return
        if self._logfile.tell() > MAX_LOG_BYTES:
            self._logfile.truncate(0)
        self._logfile.write(data)
        for writer in list(self._clients):
            writer.write(data)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._clients.add(writer)
        try:
            while data := await reader.read(4096):
                os.write(self.master, data)  # a full pty buffer raises: the client is dropped
        except (ConnectionError, OSError):
            pass
        finally:
            self._clients.discard(writer)
            writer.close()

    async def close(self) -> None:
        with contextlib.suppress(ValueError, OSError):
            asyncio.get_running_loop().remove_reader(self.master)
        if self._server is not None:
            self._server.close()
        for writer in list(self._clients):
            writer.close()
        self._clients.clear()
        self.sock_path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            os.close(self.master)
        self._logfile.close()
