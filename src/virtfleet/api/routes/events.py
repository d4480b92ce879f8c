"""Routes of ``/1.0/events``: recent events (GET) and a live stream (WebSocket, JSON text frames).

Handlers only call ``EventService``. Must not write events.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, WebSocket

from virtfleet.api.auth import ANY_USER
from virtfleet.api.deps import ServicesDep
from virtfleet.api.ws import close_with, race, until_disconnect
from virtfleet.errors import VirtfleetError
from virtfleet.model.event import Event
from virtfleet.service.events import MAX_LIMIT

router = APIRouter(prefix="/1.0/events", tags=["events"], dependencies=[ANY_USER])


@router.get("")
async def list_events(
    services: ServicesDep,
    after: Annotated[int | None, Query(ge=0)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
) -> list[Event]:
    return await services.events.list(after=after, limit=limit)


@router.websocket("")
async def stream_events(
    ws: WebSocket, services: ServicesDep, after: Annotated[int | None, Query(ge=0)] = None
) -> None:
    await ws.accept()

    async def forward() -> None:
        try:
            async for event in services.events.stream(after):
                await ws.send_text(event.model_dump_json())
        except VirtfleetError as err:  # e.g. a consumer that fell behind the watch history
            await close_with(ws, 4000 + err.status, err.message)

    await race(forward(), until_disconnect(ws))
