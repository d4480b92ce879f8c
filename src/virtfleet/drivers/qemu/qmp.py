"""Typed QMP session for one VM's monitor socket, built on the pinned ``qemu.qmp`` library.

This module owns the conversation with one QEMU process over its QMP unix
socket: connecting (with retry while QEMU creates the socket), one typed method
per QMP command the platform uses, the stream of QMP events, and the JSON-lines
QMP log kept for failed tests. Every ``qemu.qmp`` exception is translated here,
once, into the ``virtfleet.errors`` tree (``raise ... from err``); no raw
``qemu.qmp`` exception escapes this module.

It must not: speak the QMP wire protocol itself (``qemu.qmp`` does), start or
kill QEMU processes, decide instance state, or touch the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from qemu.qmp import (
    ConnectError,
    ExecInterruptedError,
    ExecuteError,
    Message,
    QMPClient,
    Runstate,
    StateError,
)
from qemu.qmp import QMPError as _LibQMPError
from qemu.qmp.error import ProtocolError

from virtfleet.errors import QMPConnectionError, QMPError, TimeoutError_

# qemu.qmp logs every failed connect attempt and every peer hang-up at ERROR/INFO
# (with tracebacks at DEBUG). Each of those surfaces here as a typed exception
# carrying the same evidence, so keep the library quiet unless someone set a level.
_LIB_LOGGER = logging.getLogger("qemu.qmp")
if _LIB_LOGGER.level == logging.NOTSET:
    _LIB_LOGGER.setLevel(logging.CRITICAL)

DEFAULT_CONNECT_TIMEOUT_S = 5.0
DEFAULT_COMMAND_TIMEOUT_S = 10.0
EVENT_HISTORY_LIMIT = 4096
_RETRY_INTERVAL_S = 0.005  # QEMU creates its socket ~20 ms after exec; poll finely
_REAP_WAIT_S = 1.0


@dataclass(frozen=True)
class QMPEvent:
    """One asynchronous QMP event, e.g. ``STOP`` or ``SHUTDOWN``."""

    name: str
    data: dict[str, Any]
    timestamp: float

    @classmethod
    def from_message(cls, msg: Mapping[str, object]) -> QMPEvent:
        data = msg.get("data")
        stamp = msg.get("timestamp")
        ts = time.time()
        if isinstance(stamp, dict):
            ts = float(stamp.get("seconds", 0)) + float(stamp.get("microseconds", 0)) / 1e6
        return cls(str(msg.get("event")), dict(data) if isinstance(data, dict) else {}, ts)


class _QMPLog:
    """Append-only JSON-lines log of everything sent and received (None path: no-op)."""

    def __init__(self, path: Path | None) -> None:
        self._file: IO[str] | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = path.open("a", encoding="utf-8", buffering=1)

    def write(self, direction: str, msg: object) -> None:
        if self._file is None or self._file.closed:
            return
        line = {"ts": round(time.time(), 6), "dir": direction, "msg": msg}
        self._file.write(json.dumps(line, default=str) + "\n")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


class _EventLog:
    """Bounded, sequence-numbered history of events; readers wait for new ones."""

    def __init__(self, limit: int = EVENT_HISTORY_LIMIT) -> None:
        self._events: deque[QMPEvent] = deque(maxlen=limit)
        self._first_seq = 0  # sequence number of self._events[0]
        self._changed = asyncio.Event()
        self.ended = False

    @property
    def next_seq(self) -> int:
        return self._first_seq + len(self._events)

    def append(self, event: QMPEvent) -> None:
        if len(self._events) == self._events.maxlen:
            self._first_seq += 1
        self._events.append(event)
        self._wake()

    def end(self) -> None:
        self.ended = True
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def get(self, seq: int) -> tuple[int, QMPEvent] | None:
        """Event number ``seq`` (or the oldest retained after it); None once ended."""
        while True:
            seq = max(seq, self._first_seq)
            if seq < self.next_seq:
                return seq, self._events[seq - self._first_seq]
            if self.ended:
                return None
            await self._changed.wait()


# Metrics polls (every 10 s for the VM's life) stay out of the QMP log, which would
# otherwise grow by megabytes a day per VM (drivers/qemu/stats.py sends them).
_UNLOGGED = frozenset({"query-blockstats", "query-balloon"})


def _unlogged(msg: Message) -> bool:
    command = msg.get("execute")
    args = msg.get("arguments")
    prop = args.get("property") if isinstance(args, dict) else None
    return command in _UNLOGGED or (command == "qom-get" and prop == "guest-stats")


class _Client(QMPClient):
    """QMPClient that logs raw traffic and hands events straight to the session."""

    def __init__(self, name: str, log: _QMPLog, events: _EventLog) -> None:
        super().__init__(name)
        self._qmp_log = log
        self._event_log = events
        self._unlogged_ids: set[object] = set()

    def _cb_outbound(self, msg: Message) -> Message:
        if _unlogged(msg):
            self._unlogged_ids.add(msg.get("id"))
        else:
            self._qmp_log.write("send", dict(msg))
        return msg

    def _cb_inbound(self, msg: Message) -> Message:
        if "id" in msg and msg["id"] in self._unlogged_ids:
            self._unlogged_ids.discard(msg["id"])
        else:
            self._qmp_log.write("recv", dict(msg))
        return msg

    async def _on_message(self, msg: Message) -> None:
        # Documented AsyncProtocol hook. Events bypass qemu.qmp's default
        # listener, whose history would grow without bound on a long-lived VM.
        if "event" in msg:
            self._event_log.append(QMPEvent.from_message(msg))
            return
        await super()._on_message(msg)


class QMPSession:
    """One connected QMP monitor. Build with ``await QMPSession.connect(path)``."""

    def __init__(self, path: Path, client: _Client, log: _QMPLog, events: _EventLog) -> None:
        self.path = path
        self.command_timeout_s = DEFAULT_COMMAND_TIMEOUT_S
        self._client = client
        self._log = log
        self._events = events
        self._wait_from = 0  # wait_event() cursor, see there
        self._closed = False
        self._disconnect_reason = ""
        # QEMU hands a passed fd to the next fd-taking command: one passing at a time.
        self._fd_lock = asyncio.Lock()
        self._watcher = asyncio.create_task(self._watch(), name=f"qmp-watch:{path}")

    # -- connection -----------------------------------------------------------

    @classmethod
    async def connect(
        cls,
        path: Path,
        *,
        timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
        log_path: Path | None = None,
        command_timeout_s: float = DEFAULT_COMMAND_TIMEOUT_S,
    ) -> QMPSession:
        """Connect and negotiate, retrying while the socket is absent or refusing.

        Raises ``QMPConnectionError`` if no QMP session is up within ``timeout_s``
        or the peer is not speaking QMP.
        """
        log, events = _QMPLog(log_path), _EventLog()
        client = _Client(path.name, log, events)
        try:
            await _connect_with_retry(client, path, timeout_s)
        except BaseException:
            log.close()
            raise
        session = cls(path, client, log, events)
        session.command_timeout_s = command_timeout_s
        return session

    @property
    def connected(self) -> bool:
        return not self._closed and self._client.runstate == Runstate.RUNNING

    async def close(self) -> None:
        """Disconnect (idempotent); ends every ``events()`` iterator."""
        if self._closed:
            return
        self._closed = True
        if self._client.runstate == Runstate.RUNNING:
            self._watcher.cancel()  # still idle-waiting; otherwise let it finish reaping
        await asyncio.gather(self._watcher, return_exceptions=True)
        await self._reap()
        self._events.end()
        self._log.close()

    async def __aenter__(self) -> QMPSession:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _watch(self) -> None:
        """Notice the peer hanging up, reap the client and end the event stream."""
        while self._client.runstate == Runstate.RUNNING:
            await self._client.runstate_changed()
        await self._reap()
        self._events.end()

    async def _reap(self) -> None:
        """Return the client to IDLE, recording why the bottom half stopped (if it did)."""
        if self._client.runstate == Runstate.IDLE:
            return
        try:
            await self._client.disconnect()
        except Exception as err:  # EOFError, OSError or a qemu.qmp ProtocolError
            self._disconnect_reason = _summary(err)
            self._log.write("note", f"disconnected: {self._disconnect_reason}")
        else:
            self._log.write("note", "disconnected")

    # -- commands -------------------------------------------------------------

    async def query_status(self) -> str:
        """The VM run state: "running", "paused", "prelaunch", "shutdown", ..."""
        reply = _as_dict("query-status", await self._execute("query-status"))
        return str(reply.get("status", ""))

    async def query_version(self) -> str:
        """QEMU's version as "major.minor.micro", e.g. "10.0.2"."""
        reply = _as_dict("query-version", await self._execute("query-version"))
        qemu = _as_dict("query-version", reply.get("qemu"))
        return f"{qemu.get('major')}.{qemu.get('minor')}.{qemu.get('micro')}"

    async def stop(self) -> None:
        await self._execute("stop")

    async def cont(self) -> None:
        await self._execute("cont")

    async def system_powerdown(self) -> None:
        await self._execute("system_powerdown")

    async def system_reset(self) -> None:
        await self._execute("system_reset")

    async def quit(self) -> None:
        """Ask QEMU to exit; QEMU hanging up before or after replying is success."""
        try:
            await self._execute("quit")
        except QMPConnectionError:
            if self._closed:  # our own close(), not QEMU going away
                raise

    async def screendump(self, path: Path, fmt: str = "png") -> None:
        await self._execute("screendump", {"filename": str(path), "format": fmt})

    async def screendump_fd(self, fd: int, fmt: str = "png") -> None:
        """Screendump into ``fd`` (opened write-only by us): QEMU running as another user cannot
        open our run directory. The fd goes by SCM_RIGHTS into an fdset (``passed_fd``)."""
        async with self.passed_fd(fd) as filename:
            await self._execute("screendump", {"filename": filename, "format": fmt})

    @contextlib.asynccontextmanager
    async def passed_fd(self, fd: int, name: str | None = None) -> AsyncIterator[str]:
        """Lend QEMU a duplicate of our ``fd`` (SCM_RIGHTS) for the commands run in the block.

        Without ``name`` the duplicate goes into a new fdset (``add-fd``) and the block gets
        ``/dev/fdset/N`` to open; the set is removed on leaving, however the block ends (what
        opened it keeps a duplicate of its own). With ``name`` it is registered by name
        (``getfd``) and the block gets the name: the command that uses it takes it over, so
        it is closed (``closefd``) only if the block fails. ``fd`` stays the caller's.
        """
        if name is not None:
            await self._execute_with_fd("getfd", {"fdname": name}, fd)
            try:
                yield name
            except BaseException:
                await self._cleanup("closefd", {"fdname": name})
                raise
            return
        reply = _as_dict("add-fd", await self._execute_with_fd("add-fd", None, fd))
        fdset = int(reply.get("fdset-id", -1))
        try:
            yield f"/dev/fdset/{fdset}"
        finally:
            await self._cleanup("remove-fd", {"fdset-id": fdset})

    async def _execute_with_fd(
        self, cmd: str, args: Mapping[str, object] | None, fd: int
    ) -> object:
        """``cmd`` with ``fd`` sent just before it: QEMU hands a passed fd to the next
        fd-taking command, so one passing at a time."""
        async with self._fd_lock:
            try:
                self._client.send_fd_scm(fd)
            except (OSError, _LibQMPError) as err:
                raise self._translate(cmd, args, err) from err
            return await self._execute(cmd, args)

    async def _cleanup(self, cmd: str, args: Mapping[str, object]) -> None:
        """Best effort: a leftover fd costs QEMU one descriptor, never the caller's result
        or the error it is already raising (QEMU may be gone)."""
        try:
            await self._execute(cmd, args)
        except (QMPError, TimeoutError_) as err:
            self._log.write("note", f"{cmd} {dict(args)} failed: {err.message}")

    async def execute(self, cmd: str, args: Mapping[str, object] | None = None) -> object:
        """Any command, for the typed wrappers in sibling modules (live, blockjobs, stats,
        vmstate); errors come out translated like every typed method's."""
        return await self._execute(cmd, args)

    async def query_cpus_fast(self) -> list[dict[str, Any]]:
        reply = await self._execute("query-cpus-fast")
        if not isinstance(reply, list) or not all(isinstance(c, dict) for c in reply):
            raise _bad_reply("query-cpus-fast", reply)
        return [dict(cpu) for cpu in reply]

    async def human_monitor_command(self, cmd: str) -> str:
        """Run an HMP command line and return its text output."""
        reply = await self._execute("human-monitor-command", {"command-line": cmd})
        if not isinstance(reply, str):
            raise _bad_reply("human-monitor-command", reply)
        return reply

    async def _execute(self, cmd: str, args: Mapping[str, object] | None = None) -> object:
        """Run one command within ``command_timeout_s``; errors come out translated."""
        if self._closed:
            raise QMPConnectionError(
                f"QMP '{cmd}' failed: session is closed", **_evidence(cmd, args, self.path)
            )
        self._wait_from = self._events.next_seq
        try:
            async with asyncio.timeout(self.command_timeout_s):
                return await self._client.execute(cmd, args)
        except TimeoutError as err:
            raise TimeoutError_(
                f"QMP '{cmd}' got no reply within {self.command_timeout_s:g}s",
                timeout_s=self.command_timeout_s,
                **_evidence(cmd, args, self.path),
            ) from err
        except _LibQMPError as err:
            if isinstance(err, ExecInterruptedError | StateError):
                # The hang-up is being reaped; wait briefly so its cause is known.
                await asyncio.wait({self._watcher}, timeout=_REAP_WAIT_S)
            raise self._translate(cmd, args, err) from err

    def _translate(self, cmd: str, args: Mapping[str, object] | None, err: Exception) -> QMPError:
        evidence = _evidence(cmd, args, self.path)
        if isinstance(err, ExecuteError):
            desc = str(err.error.error.desc)
            return QMPError(
                f"QMP '{cmd}' failed: {desc}",
                error_class=err.error_class,
                error_desc=desc,
                **evidence,
            )
        if isinstance(err, ExecInterruptedError | StateError):
            reason = self._disconnect_reason or "connection closed"
            return QMPConnectionError(
                f"QMP '{cmd}' failed: QEMU monitor disconnected ({reason})",
                error_class=type(err).__name__,
                error_desc=reason,
                **evidence,
            )
        desc = _summary(err)
        kind = "protocol error" if isinstance(err, ProtocolError) else "client error"
        return QMPConnectionError(
            f"QMP '{cmd}' failed: {kind}: {desc}",
            error_class=type(err).__name__,
            error_desc=desc,
            **evidence,
        )

    # -- events ---------------------------------------------------------------

    @property
    def event_seq(self) -> int:
        """The sequence number the next event will get: ``events(since=s.event_seq)``
        yields only events that arrive from now on."""
        return self._events.next_seq

    async def events(self, since: int = 0) -> AsyncIterator[QMPEvent]:
        """Every event since connection (or number ``since``), in order; ends when the
        monitor disconnects.

        Each call gets its own cursor over the (bounded) history, so several
        consumers may iterate independently.
        """
        seq = since
        while (item := await self._events.get(seq)) is not None:
            seq, event = item
            seq += 1
            yield event

    async def wait_event(self, names: set[str], timeout_s: float) -> QMPEvent:
        """The first event named in ``names`` since the last command was issued.

        Looking back to the last command means ``await s.stop(); await
        s.wait_event({"STOP"}, 5)`` cannot miss a STOP that QEMU sent before its
        reply. Each returned event moves the cursor past it, so successive calls
        return successive events. Raises ``TimeoutError_`` after ``timeout_s`` and
        ``QMPConnectionError`` if the monitor disconnects first.
        """
        wanted = ", ".join(sorted(names))
        try:
            async with asyncio.timeout(timeout_s):
                found = await self._next_matching(names)
        except TimeoutError as err:
            raise TimeoutError_(
                f"no QMP event {wanted} within {timeout_s:g}s",
                events=sorted(names),
                timeout_s=timeout_s,
                socket=str(self.path),
            ) from err
        if found is None:
            reason = self._disconnect_reason or "connection closed"
            raise QMPConnectionError(
                f"QEMU monitor disconnected while waiting for QMP event {wanted} ({reason})",
                events=sorted(names),
                socket=str(self.path),
            )
        return found

    async def _next_matching(self, names: set[str]) -> QMPEvent | None:
        seq = self._wait_from
        while (item := await self._events.get(seq)) is not None:
            seq, event = item
            seq += 1
            if event.name in names:
                self._wait_from = seq
                return event
        return None


async def _connect_with_retry(client: _Client, path: Path, timeout_s: float) -> None:
    """Retry while the socket is missing/refusing/hanging up; fail fast on non-QMP peers."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    attempts, last, failed = 0, "no attempt made", False
    while True:
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            raise _connect_failed(path, f"gave up after {timeout_s:g}s: {last}", attempts)
        attempts += 1
        try:
            async with asyncio.timeout(remaining):
                await client.connect(str(path))
            return
        except TimeoutError:
            # a deadline cutting a retry short keeps the earlier, real reason
            last = last if failed else "no QMP greeting (timed out)"
        except ConnectError as err:
            last, failed = _summary(err.exc), True
            if not isinstance(err.exc, OSError | EOFError):
                raise _connect_failed(path, last, attempts) from err
        except _LibQMPError as err:
            raise _connect_failed(path, _summary(err), attempts) from err
        await asyncio.sleep(min(_RETRY_INTERVAL_S, max(0.0, remaining)))


def _connect_failed(path: Path, reason: str, attempts: int) -> QMPConnectionError:
    return QMPConnectionError(
        f"cannot connect to QMP socket {path}: {reason}",
        socket=str(path),
        attempts=attempts,
        error_desc=reason,
    )


def _evidence(cmd: str, args: Mapping[str, object] | None, path: Path) -> dict[str, Any]:
    return {"command": cmd, "arguments": dict(args or {}), "socket": str(path)}


def _summary(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _as_dict(cmd: str, value: object) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _bad_reply(cmd, value)
    return value


def _bad_reply(cmd: str, value: object) -> QMPError:
    return QMPError(
        f"QMP '{cmd}' failed: unexpected reply shape {type(value).__name__}",
        command=cmd,
        error_class="UnexpectedReply",
        error_desc=repr(value)[:500],
    )
