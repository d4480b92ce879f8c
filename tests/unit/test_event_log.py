"""The event log stays bounded: every 100th append drops the oldest beyond MAX_EVENTS,
in one store revision (not one commit per dropped event)."""

from __future__ import annotations

import pytest

from virtfleet.model.event import Event
from virtfleet.state import repos
from virtfleet.state.memory import MemoryStore
from virtfleet.state.repos import EVENTS, EventLog


async def test_prune_keeps_the_newest_in_one_revision(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(repos, "MAX_EVENTS", 30)
    store = MemoryStore()
    log = EventLog(store)
    for i in range(99):
        await log.append(Event(kind="test", target="t", message=str(i)))
    before = await store.revision()
    await log.append(Event(kind="test", target="t", message="99"))
    assert await store.revision() == before + 2  # the 100th event, then the whole prune
    kept = await log.recent(limit=1000)
    assert [e.message for e in kept] == [str(i) for i in range(70, 100)]
    assert len(await store.list(EVENTS)) == 30
