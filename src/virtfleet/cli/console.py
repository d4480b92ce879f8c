"""Interactive serial console: the terminal in raw mode, bridged to the console websocket.

Owns the terminal (raw mode, restored on every exit) and the Ctrl-] detach key.
Must not know QEMU: it speaks only the API's websocket (through the daemon's
Unix socket, or a remote's pinned TLS with its token: ``WsTarget.connect``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import termios
import tty
from collections.abc import Iterator

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from virtfleet.client import ApiError, Client, WsTarget
from virtfleet.client.calls import inst

DETACH = b"\x1d"  # Ctrl-]
_CLOSE_CODES = {4400: "invalid_input", 4404: "not_found", 4409: "conflict"}


def attach(client: Client, name: str) -> None:
    """Attach the terminal to ``name``'s serial console until Ctrl-] or the console closes."""
    client.get_instance(name)  # a missing instance is a plain not_found, before any session
    try:
        sys.stdin.fileno()
    except (OSError, ValueError) as err:
        raise ApiError(
            "invalid_input", "console needs a terminal (or a pipe) on stdin", 400
        ) from err
    target = client.websocket(inst(name) + "/console")
    try:
        reason = asyncio.run(_session(target, name))
    except (OSError, InvalidHandshake) as err:
        raise target.error(err) from err
    if reason:
        print(f"\r\n{reason}", file=sys.stderr)


async def _session(target: WsTarget, name: str) -> str:
    async with target.connect() as ws:
        print(f"Connected to {name}'s serial console; detach with Ctrl-]", file=sys.stderr)
        with _raw_terminal():
            keyboard, screen = asyncio.create_task(_keyboard(ws)), asyncio.create_task(_screen(ws))
            done, pending = await asyncio.wait(
                (keyboard, screen), return_when=asyncio.FIRST_COMPLETED
            )
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if screen in done:
            return _closed_reason(ws)
        keyboard.result()
        return f"detached from {name}"


def _closed_reason(ws: ClientConnection) -> str:
    code = ws.close_code or 1000
    reason = ws.close_reason or "console closed"
    if code >= 4000:
        raise ApiError(_CLOSE_CODES.get(code, "console_error"), reason, code - 4000)
    return reason


async def _keyboard(ws: ClientConnection) -> None:
    """Send keystrokes until Ctrl-] (or end of input)."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    fd = sys.stdin.fileno()
    loop.add_reader(fd, lambda: queue.put_nowait(os.read(fd, 1024)))
    try:
        while data := await queue.get():
            head, detach, _ = data.partition(DETACH)
            if head:
                await ws.send(head)
            if detach:
                return
    finally:
        loop.remove_reader(fd)


async def _screen(ws: ClientConnection) -> None:
    """Write what the console sends until it closes."""
    with contextlib.suppress(ConnectionClosed):
        async for message in ws:
            data = message if isinstance(message, bytes) else message.encode()
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()


@contextlib.contextmanager
def _raw_terminal() -> Iterator[None]:
    if not sys.stdin.isatty():
        yield
        return
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
