"""WebSocket ``/1.0/instances/{name}/console``: bridge bytes to the instance's serial socket.

Owns the bridge and the one-client-at-a-time rule (QEMU's socket chardev
serves a single client; a second one would hang silently, so it is refused
with close code 4409 and a reason). Close codes are 4000 + the HTTP status of
the error. Must not start, stop or inspect the instance beyond asking services.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, WebSocket

from virtfleet.api.auth import OPERATOR
from virtfleet.api.deps import ServicesDep
from virtfleet.api.ws import bridge, close_with
from virtfleet.errors import ConflictError, VirtfleetError
from virtfleet.model.names import validate_name

router = APIRouter(tags=["instances"], dependencies=[OPERATOR])  # a shell is a change


@router.websocket("/1.0/instances/{name}/console")
async def console(ws: WebSocket, name: str, services: ServicesDep) -> None:
    await ws.accept()
    busy: set[str] = ws.app.state.console_sessions
    try:
        await services.instances.get(validate_name(name, "instance name"))
        path = services.console.socket_path(name)
        if path is None:
            raise ConflictError(f"instance {name!r} has no serial console (is it running?)")
        if name in busy:
            raise ConflictError(f"console of {name!r} is busy: another client is attached")
        reader, writer = await _connect(str(path))
    except VirtfleetError as err:
        await close_with(ws, 4000 + err.status, err.message)
        return
    busy.add(name)
    try:
        if await bridge(ws, reader, writer) == 1:
            await close_with(ws, 1000, "console closed by the instance")
    finally:
        busy.discard(name)


async def _connect(path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    try:
        return await asyncio.open_unix_connection(path)
    except OSError as err:
        raise ConflictError(f"cannot reach the serial console: {err.strerror or err}") from err
