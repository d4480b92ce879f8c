"""Container consoles: the init's pty master, kept alive across agent restarts, and its relay.

The runtime hands us each container's pty master (handover.py). So that the pty
outlives the agent (a closed master would hang up the container's console), the
keeper process (keeper.py, one for all containers of a run directory) keeps a
copy of each master; a restarted agent takes the copies back from it. While
the agent runs, ``ConsoleRelay`` appends everything the container prints to
``console.log`` and serves the console on a Unix socket for the existing console
plumbing (service/console.py, api/routes/console.py).
Must not know about runtimes or instances beyond the paths it is given.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

from virtfleet.drivers.oci.handover import bind
from virtfleet.errors import ProcessError

log = logging.getLogger(__name__)

KEEPER_SCRIPT = Path(__file__).with_name("keeper.py")
MAX_LOG_BYTES = 8 * 1024 * 1024  # the log restarts empty beyond this (a console is not a journal)


class ConsoleKeeper:
    """The agent's side of the keeper process (keeper.py) of one run directory.

    ``keep`` is one ``sendmsg`` on a connection held open for the agent's life, so a
    start pays no process spawn. The keeper is spawned on first need, with a listening
    socket bound here (nothing to wait for: connects queue until it runs). If it dies
    while the agent runs, a new one is given every master ``masters()`` lists.
    """

    def __init__(self, sock_path: Path, masters: Callable[[], Iterable[tuple[str, int]]]) -> None:
        self.sock_path = sock_path
        self.masters = masters
        self._conn: socket.socket | None = None

    def keep(self, name: str, master: int) -> None:
        """Hand the keeper a copy of ``master`` (it replaces any kept for ``name``)."""
        try:
            self._send_keep(name, master)
        except OSError:  # gone unnoticed: a fresh keeper, given every master again
            try:
                self._renew()
                self._send_keep(name, master)
            except OSError as err:
                raise ProcessError(f"console keeper unreachable: {err.strerror}") from err

    def _send_keep(self, name: str, master: int) -> None:
        conn = self._connected(spawn=True)
        assert conn is not None
        socket.send_fds(conn, [b"K" + name.encode()], [master])

    def drop(self, name: str) -> None:
        """Close the keeper's copy for ``name``, if a keeper runs (never spawns one)."""
        with contextlib.suppress(OSError):
            conn = self._connected(spawn=False)
            if conn is not None:
                conn.send(b"D" + name.encode())

    def take(self, name: str, timeout_s: float = 2.0) -> int | None:
        """A copy of the master kept for ``name`` (None if none is), over a connection
        of its own: the held one only ever sends."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as conn:
            conn.settimeout(timeout_s)
            try:
                conn.connect(str(self.sock_path))
                conn.send(b"G" + name.encode())
                msg, fds, _, _ = socket.recv_fds(conn, 4096, 1)
            except OSError as err:
                raise ProcessError(f"console keeper unreachable: {err.strerror}") from err
        if msg[:1] != b"G" or not fds:
            return None
        os.set_inheritable(fds[0], False)
        return fds[0]

    def close(self) -> None:
        """Disconnect; a keeper that keeps nothing then exits."""
        if self._conn is not None:
            with contextlib.suppress(ValueError, OSError, RuntimeError):
                asyncio.get_running_loop().remove_reader(self._conn.fileno())
            self._conn.close()
            self._conn = None

    def _connected(self, spawn: bool) -> socket.socket | None:
        if self._conn is None:
            conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            try:
                conn.connect(str(self.sock_path))
            except (FileNotFoundError, ConnectionRefusedError):
                if not spawn:
                    conn.close()
                    return None
                self._spawn()
                conn.connect(str(self.sock_path))
            except BaseException:
                conn.close()
                raise
            self._watch(conn)
            self._conn = conn
        return self._conn

    def _spawn(self) -> None:
        with bind(self.sock_path, socket.SOCK_SEQPACKET, 64) as listener:
            fd = listener.fileno()
            subprocess.Popen(
                [sys.executable, "-I", "-S", str(KEEPER_SCRIPT), str(fd)],
                pass_fds=(fd,),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,  # not in the agent's process group: survives its death
            )

    def _watch(self, conn: socket.socket) -> None:
        """The keeper never writes on this connection: readable means it is gone."""
        with contextlib.suppress(RuntimeError):  # no loop (a sync caller): send errors tell
            asyncio.get_running_loop().add_reader(conn.fileno(), self._on_readable)

    def _on_readable(self) -> None:
        try:
            self._renew()
        except OSError as err:
            log.error("console keeper %s cannot be restarted: %s", self.sock_path, err)

    def _renew(self) -> None:
        """The keeper went away: a new one, given every master again."""
        log.warning("console keeper %s went away; starting a new one", self.sock_path)
        self.close()
        for name, master in self.masters():
            self._send_keep(name, master)


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
