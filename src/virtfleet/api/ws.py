"""WebSocket helpers shared by the event stream and the console bridges.

Owns racing a websocket's two directions, bridging a websocket to a Unix
socket stream and closing with a (truncated) reason. Must not know what flows
over the socket.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any

from fastapi import WebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketState

CHUNK = 64 * 1024
MAX_REASON_BYTES = 123  # RFC 6455 section 5.5: control frame payload <= 125, 2 for the code


async def race(*coros: Coroutine[Any, Any, None]) -> int:
    """Run ``coros`` until the first ends; cancel the rest; return the first's index.

    A client disconnecting midway ends that side quietly.
    """
    tasks = [asyncio.create_task(_quiet(c)) for c in coros]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    first = next(iter(done))
    first.result()
    return tasks.index(first)


async def _quiet(coro: Coroutine[Any, Any, None]) -> None:
    with contextlib.suppress(WebSocketDisconnect, ConnectionError, RuntimeError):
        await coro


async def until_disconnect(ws: WebSocket) -> None:
    """Return once the client has gone (messages from it are ignored)."""
    while (await ws.receive())["type"] != "websocket.disconnect":
        pass


async def close_with(ws: WebSocket, code: int, reason: str) -> None:
    """Close with ``code`` and ``reason`` cut to what a close frame can carry."""
    if ws.application_state is not WebSocketState.CONNECTED:
        return
    data = reason.encode()[:MAX_REASON_BYTES].decode(errors="ignore")
    with contextlib.suppress(RuntimeError, ConnectionError):
        await ws.close(code=code, reason=data)


async def bridge(ws: WebSocket, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> int:
    """Copy frames to ``writer`` and bytes from ``reader`` back as binary frames until either
    side ends: 0 if the client left, 1 if the socket closed. Closes ``writer``."""
    try:
        return await race(_to_socket(ws, writer), _to_client(ws, reader))
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def _to_socket(ws: WebSocket, writer: asyncio.StreamWriter) -> None:
    while True:
        message = await ws.receive()
        if message["type"] == "websocket.disconnect":
            return
        writer.write(message.get("bytes") or (message.get("text") or "").encode())
        await writer.drain()


async def _to_client(ws: WebSocket, reader: asyncio.StreamReader) -> None:
    while data := await reader.read(CHUNK):
        await ws.send_bytes(data)
