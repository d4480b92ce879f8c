"""Scripted fake QMP server on a unix socket, for tests of anything that talks QMP.

It plays the QEMU side of the wire: greeting, ``qmp_capabilities``, one reply per
command, events on demand, and the misbehaviours a real QEMU shows when it dies
(abrupt close, a garbage line). It simulates just enough VM state (``status``) for
the default ``stop``/``cont``/``quit`` handlers to behave like QEMU 10. It must not
import anything from virtfleet: it is a stand-in for QEMU, not for our code.

Usage::

    async with FakeQMPServer(sock, {"query-status": ok({"status": "paused"}),
                                    "cont": error("device not ready"),
                                    "stop": CLOSE}) as fake:
        session = await QMPSession.connect(sock)
        await fake.emit("STOP")

A script value is a reply dict (``ok(...)``/``error(...)``), an ``Action``
(``HANG``, ``CLOSE``, ``GARBAGE``) or a callable ``(args) -> reply | Action``
(sync or async). Commands not in the script use the built-in defaults.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import inspect
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

Reply = dict[str, Any]


class Action(enum.Enum):
    HANG = "hang"  # never answer this command (keep reading others)
    CLOSE = "close"  # drop the connection instead of answering
    GARBAGE = "garbage"  # answer with a line that is not JSON


HANG, CLOSE, GARBAGE = Action.HANG, Action.CLOSE, Action.GARBAGE

Outcome = Reply | Action
Handler = Callable[[dict[str, Any]], Outcome | Awaitable[Outcome]]
ScriptEntry = Reply | Action | Handler

GARBAGE_LINE = b"}}this is not {json\n"


def ok(value: Any = None) -> Reply:
    """A success reply; ``ok()`` is QEMU's empty ``{"return": {}}``."""
    return {"return": {} if value is None else value}


def error(desc: str, cls: str = "GenericError") -> Reply:
    """An error reply as QEMU sends it."""
    return {"error": {"class": cls, "desc": desc}}


def event_message(name: str, data: Mapping[str, Any] | None = None) -> dict[str, Any]:
    now = time.time()
    msg: dict[str, Any] = {
        "event": name,
        "timestamp": {"seconds": int(now), "microseconds": int((now % 1) * 1e6)},
    }
    if data is not None:
        msg["data"] = dict(data)
    return msg


def split_json_stream(buffer: bytes) -> tuple[list[bytes], bytes]:
    """Split complete top-level JSON objects off ``buffer``; return them and the rest.

    QMP is a JSON stream, not a line protocol: qemu.qmp sends no newline after a
    command, so (like QEMU's json-streamer) objects are delimited by nesting depth.
    A run of stray bytes outside any object is returned as one (invalid) value.
    """
    values: list[bytes] = []
    depth, start, in_string, escaped = 0, 0, False, False
    for i, char in enumerate(map(chr, buffer)):  # multi-byte UTF-8 never matches {}[]"\\
        if in_string:
            escaped, in_string = (False, True) if escaped else (char == "\\", char != '"')
        elif char == '"':
            in_string = True
        elif char in "{[":
            if depth == 0 and buffer[start:i].strip():
                values.append(buffer[start:i].strip())
            start = i if depth == 0 else start
            depth += 1
        elif char in "}]" and depth > 0:
            depth -= 1
            if depth == 0:
                values.append(buffer[start : i + 1])
                start = i + 1
    rest = buffer[start:]
    if depth == 0 and rest.strip():
        values.append(rest.strip())
        rest = b""
    return values, rest


class FakeQMPServer:
    """One listening unix socket; serves one client at a time, like QEMU's monitor."""

    def __init__(
        self,
        path: Path,
        script: Mapping[str, ScriptEntry] | None = None,
        *,
        greet: bool = True,
        version: tuple[int, int, int] = (10, 0, 2),
        status: str = "running",
    ) -> None:
        self.path = path
        self.script: dict[str, ScriptEntry] = dict(script or {})
        self.greet = greet
        self.version = version
        self.status = status  # simulated VM run state, changed by stop/cont/quit
        self.received: list[dict[str, Any]] = []  # every parsed client message
        self.connections = 0
        self._server: asyncio.AbstractServer | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._connected = asyncio.Event()
        self._got_message = asyncio.Event()

    # -- lifecycle --------------------------------------------------------------

    async def start(self) -> FakeQMPServer:
        self._server = await asyncio.start_unix_server(self._on_client, path=str(self.path))
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        await self.close_client()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.path.unlink(missing_ok=True)

    async def __aenter__(self) -> FakeQMPServer:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- test controls ----------------------------------------------------------

    async def wait_connected(self, timeout_s: float = 5.0) -> None:
        """Wait until a client has connected (and been greeted)."""
        await asyncio.wait_for(self._connected.wait(), timeout_s)

    async def wait_command(self, name: str, timeout_s: float = 5.0) -> dict[str, Any]:
        """Wait until a command ``name`` has been received; return that message."""
        async with asyncio.timeout(timeout_s):
            while True:
                for msg in self.received:
                    if msg.get("execute") == name:
                        return msg
                self._got_message.clear()
                await self._got_message.wait()

    def commands(self) -> list[str]:
        """Names of the commands received so far, in order."""
        return [str(m.get("execute")) for m in self.received if "execute" in m]

    async def emit(self, name: str, data: Mapping[str, Any] | None = None) -> None:
        """Send event ``name`` to the connected client."""
        await self._send(event_message(name, data))

    async def send_garbage(self, line: bytes = GARBAGE_LINE) -> None:
        await self._write(line)

    async def send_raw(self, data: bytes) -> None:
        await self._write(data)

    async def close_client(self) -> None:
        """Drop the current client connection abruptly (like QEMU being killed)."""
        writer, self._writer = self._writer, None
        self._connected.clear()
        if writer is not None:
            writer.transport.abort()

    # -- connection handling ----------------------------------------------------

    def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.create_task(self._serve(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._writer is not None:  # QEMU's monitor serves one client at a time
            writer.transport.abort()
            return
        self._writer = writer
        self.connections += 1
        try:
            if self.greet:
                await self._send(self._greeting())
            self._connected.set()
            buffer = b""
            while chunk := await reader.read(65536):
                messages, buffer = split_json_stream(buffer + chunk)
                for raw in messages:
                    await self._handle_message(raw)
        except ConnectionError:
            pass
        finally:
            if self._writer is writer:
                await self.close_client()

    async def _handle_message(self, raw: bytes) -> None:
        try:
            msg = json.loads(raw)
        except json.JSONDecodeError:
            msg = None
        if not isinstance(msg, dict):
            await self._send(error("JSON parse error, expecting an object"))
            return
        self.received.append(msg)
        self._got_message.set()
        outcome = await self._run(str(msg.get("execute", "")), msg.get("arguments") or {})
        await self._respond(msg, outcome)

    async def _run(self, cmd: str, args: dict[str, Any]) -> Outcome:
        entry = self.script.get(cmd) or self._defaults().get(cmd)
        if entry is None:
            return error(f"The command {cmd} has not been found", "CommandNotFound")
        if isinstance(entry, dict | Action):
            return entry
        result = entry(args)
        return await result if inspect.isawaitable(result) else result

    async def _respond(self, msg: dict[str, Any], outcome: Outcome) -> None:
        if outcome is HANG:
            return
        if outcome is CLOSE:
            await self.close_client()
            return
        if outcome is GARBAGE:
            await self.send_garbage()
            return
        assert isinstance(outcome, dict)
        reply = dict(outcome)
        if "id" in msg:
            reply["id"] = msg["id"]
        await self._send(reply)
        if msg.get("execute") == "quit" and "quit" not in self.script:
            await self._quit()

    async def _send(self, msg: Mapping[str, Any]) -> None:
        await self._write(json.dumps(msg).encode() + b"\r\n")

    async def _write(self, data: bytes) -> None:
        writer = self._writer
        if writer is None:
            raise RuntimeError("fake QMP: no client connected")
        writer.write(data)
        with contextlib.suppress(ConnectionError):
            await writer.drain()

    # -- built-in QEMU behaviour ------------------------------------------------

    def _greeting(self) -> dict[str, Any]:
        major, minor, micro = self.version
        qemu = {"major": major, "minor": minor, "micro": micro}
        return {"QMP": {"version": {"qemu": qemu, "package": "fake"}, "capabilities": ["oob"]}}

    def _defaults(self) -> dict[str, ScriptEntry]:
        major, minor, micro = self.version
        return {
            "qmp_capabilities": ok(),
            "query-version": ok(
                {"qemu": {"major": major, "minor": minor, "micro": micro}, "package": "fake"}
            ),
            "query-status": lambda _a: ok(
                {"status": self.status, "running": self.status == "running", "singlestep": False}
            ),
            "stop": lambda _a: self._transition("paused", "STOP"),
            "cont": lambda _a: self._transition("running", "RESUME"),
            "system_powerdown": lambda _a: self._event_then_ok("POWERDOWN"),
            "system_reset": lambda _a: self._event_then_ok(
                "RESET", {"guest": False, "reason": "host-qmp-system-reset"}
            ),
            "quit": ok(),
            "query-cpus-fast": ok(
                [{"cpu-index": 0, "qom-path": "/machine/unattached/device[0]", "thread-id": 1}]
            ),
            "human-monitor-command": ok(""),
            "screendump": ok(),
        }

    async def _transition(self, status: str, event: str) -> Reply:
        # QEMU emits STOP/RESUME synchronously, i.e. before the command's reply.
        if self.status != status:
            self.status = status
            await self.emit(event)
        return ok()

    async def _event_then_ok(self, name: str, data: Mapping[str, Any] | None = None) -> Reply:
        await self.emit(name, data)
        return ok()

    async def _quit(self) -> None:
        self.status = "shutdown"
        await self.emit("SHUTDOWN", {"guest": False, "reason": "host-qmp-quit"})
        await self.close_client()
