"""Event reading for users: the recent history after a revision and a live stream.

Owns the read side of the event log (``/events/``). Must not write events other
than through ``EventLog.append`` (the services and the agent do that).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from virtfleet.model.event import Event
from virtfleet.state.follow import follow
from virtfleet.state.keys import EVENTS
from virtfleet.state.repos import EventLog

MAX_LIMIT = 1000


class EventService:
    def __init__(self, log: EventLog) -> None:
        self.log = log

    async def list(self, after: int | None = None, limit: int = 100) -> list[Event]:
        """Events with revision > ``after`` (oldest first, at most ``limit``);
        without ``after``, the newest ``limit`` events."""
        limit = max(1, min(limit, MAX_LIMIT))
        if after is None:
            return await self.log.recent(limit)
        events = await self.log.recent(MAX_LIMIT * 2)
        return [e for e in events if (e.revision or 0) > after][:limit]

    async def stream(self, after: int | None = None) -> AsyncIterator[Event]:
        """Every new event (after ``after`` if given, else from now), as it is appended;
        across a compaction or a store outage the events of the gap come first."""
        start = after if after is not None else await self.log.store.revision()
        changes = follow(self.log.store, EVENTS, start, "event stream")
        try:
            async for change in changes:
                if change.type == "put" and change.value and change.key.startswith(EVENTS):
                    event = Event.model_validate_json(change.value)
                    yield event.model_copy(update={"revision": change.revision})
        finally:
            await changes.aclose()
