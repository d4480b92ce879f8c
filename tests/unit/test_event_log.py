"""The event log stays bounded: every 100th append drops the oldest beyond MAX_EVENTS,
in one store revision (not one commit per dropped event)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from virtfleet.model.event import Event
from virtfleet.state import repos
from virtfleet.state.keys import EVENTS
from virtfleet.state.memory import MemoryStore
from virtfleet.state.repos import EventLog
from virtfleet.state.sqlite import SQLiteStore
from virtfleet.state.store import Put, StateStore

from ..yielding import yielding


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


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StateStore]:
    made: StateStore = MemoryStore() if request.param == "memory" else SQLiteStore(tmp_path / "s")
    yield yielding(made)
    await made.close()


async def test_concurrent_writers_never_overwrite_or_reorder(store: StateStore) -> None:
    """Two event logs (two daemons) and many tasks append at once: every event is kept
    once, under its own key, and read back in the order of the revisions it got."""
    logs = [EventLog(store), EventLog(store)]

    async def append(i: int) -> Event:
        return await logs[i % 2].append(Event(kind="test", target="t", message=str(i)))

    appended = await asyncio.gather(*(append(i) for i in range(40)))
    assert len(await store.list(EVENTS)) == 40
    by_revision = sorted(appended, key=lambda e: e.revision or 0)
    kept = await logs[0].recent(limit=1000)
    assert [(e.message, e.revision) for e in kept] == [(e.message, e.revision) for e in by_revision]
    assert len({e.revision for e in kept}) == 40


async def test_events_in_a_shared_commit_are_kept_too(store: StateStore) -> None:
    """An entry carried in another write's commit (``entry``) never lands on the key of
    an event appended meanwhile."""
    log = EventLog(store)
    first = await log.entry(Event(kind="test", target="t", message="carried"))
    await log.append(Event(kind="test", target="t", message="meanwhile"))
    await store.txn([], [Put("/elsewhere", b"x"), first])
    assert [e.message for e in await log.recent()] == ["meanwhile", "carried"]
