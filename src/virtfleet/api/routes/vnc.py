"""The graphical console: VNC tickets, the VNC websocket bridge and screenshots.

- ``POST /1.0/instances/{name}/console/vnc-ticket`` (operator): a single-use
  ticket valid 30 s, bound to the instance and the caller;
- ``WebSocket /1.0/instances/{name}/vnc?ticket=...``: bridges binary frames to
  the VM's VNC Unix socket (RFB, RFC 6143). A ticket authenticates it (browsers
  cannot set headers on websockets); without one an operator's own credentials
  do. Close codes are 4000 + the HTTP status: 4401 no credentials, 4403 bad
  ticket or role, 4404 unknown instance, 4409 no VNC server (not running);
- ``GET /1.0/instances/{name}/screenshot`` (viewer): the screen as PNG.
Must not start, stop or inspect instances beyond asking services.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Response, WebSocket

from virtfleet.api.auth import ANY_USER, AUTH_ERROR, NO_CREDENTIALS, Operator, principal_of
from virtfleet.api.auth import request_state as state_of
from virtfleet.api.deps import InstanceName, ServicesDep
from virtfleet.api.ws import bridge, close_with
from virtfleet.errors import (
    AuthError,
    ConflictError,
    ForbiddenError,
    InvalidStateError,
    VirtfleetError,
)
from virtfleet.model.auth import Principal, Role
from virtfleet.model.console import ConsoleTicket
from virtfleet.model.instance import PowerState
from virtfleet.model.names import validate_name
from virtfleet.service import Services

router = APIRouter(tags=["instances"])
SUBPROTOCOL = "binary"  # what noVNC offers
_PNG: dict[int | str, dict[str, Any]] = {
    200: {"content": {"image/png": {}}, "description": "The screen as PNG"}
}
_SHOWN = (PowerState.RUNNING, PowerState.PAUSED)


@router.post("/1.0/instances/{name}/console/vnc-ticket")
async def vnc_ticket(name: InstanceName, services: ServicesDep, who: Operator) -> ConsoleTicket:
    """A ticket to open this instance's VNC websocket once, within ``expires_in_s``."""
    await services.instances.get(name)
    return services.console_tickets.issue(name, who)


@router.get(
    "/1.0/instances/{name}/screenshot",
    dependencies=[ANY_USER],
    response_class=Response,
    responses=_PNG,
)
async def screenshot(name: InstanceName, services: ServicesDep) -> Response:
    """The instance's screen as PNG; 409 ``invalid_state`` unless running or paused."""
    power = (await services.instances.get(name)).status.power
    if power not in _SHOWN:
        raise InvalidStateError(power.value, [s.value for s in _SHOWN])
    png = await services.console.screenshot(name)
    return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})


@router.websocket("/1.0/instances/{name}/vnc")
async def vnc(ws: WebSocket, name: str, services: ServicesDep, ticket: str | None = None) -> None:
    offered = ws.scope.get("subprotocols") or []
    await ws.accept(subprotocol=SUBPROTOCOL if SUBPROTOCOL in offered else None)
    try:
        validate_name(name, "instance name")
        _authorise(ws, services, name, ticket)
        await services.instances.get(name)
        path = services.console.vnc_socket(name)
        if path is None:
            raise ConflictError(f"instance {name!r} has no VNC server (is it running?)")
        reader, writer = await _connect(str(path))
    except VirtfleetError as err:
        await close_with(ws, 4000 + err.status, err.message)
        return
    if await bridge(ws, reader, writer) == 1:
        await close_with(ws, 1000, "VNC server closed the connection")


def _authorise(ws: WebSocket, services: Services, name: str, ticket: str | None) -> Principal:
    """The ticket's principal if a ticket is given (spending it), else an operator's session."""
    if ticket is not None:
        return services.console_tickets.redeem(ticket, name)
    principal = principal_of(ws.scope)
    if principal is None:
        error = state_of(ws.scope).get(AUTH_ERROR)
        raise error if isinstance(error, VirtfleetError) else AuthError(NO_CREDENTIALS)
    if not principal.role.allows(Role.OPERATOR):
        raise ForbiddenError(f"{principal.username} has role {principal.role}; this needs operator")
    return principal


async def _connect(path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    try:
        return await asyncio.open_unix_connection(path)
    except OSError as err:
        raise ConflictError(f"cannot reach the VNC server: {err.strerror or err}") from err
