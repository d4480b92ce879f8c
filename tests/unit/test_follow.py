"""``state.follow``: a watch that ends with a compaction or an outage is resumed after a
re-read, and what changed in the gap is handed over first; a closed store ends it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from virtfleet.errors import ConflictError, StoreUnavailableError, VirtfleetError
from virtfleet.state import follow as follow_module
from virtfleet.state.follow import follow
from virtfleet.state.memory import MemoryStore
from virtfleet.state.store import WatchEvent


class Cut(MemoryStore):
    """A memory store whose next watches end at once with the errors in ``cuts``."""

    def __init__(self, cuts: list[VirtfleetError]) -> None:
        super().__init__()
        self.cuts = cuts
        self.watched: list[int | None] = []

    def watch(self, prefix: str, after_revision: int | None = None) -> AsyncIterator[WatchEvent]:
        self.watched.append(after_revision)
        if self.cuts:
            return _failing(self.cuts.pop(0))
        return super().watch(prefix, after_revision)


async def _failing(err: VirtfleetError) -> AsyncIterator[WatchEvent]:
    raise err
    yield  # pragma: no cover (makes this an async generator)


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(follow_module, "RETRY_S", (0.0,))


async def test_a_gap_is_replayed_and_the_watch_resumes_after_it() -> None:
    unavailable = StoreUnavailableError("etcd is unavailable")
    store = Cut([unavailable, ConflictError("compacted", compacted=3)])
    start = await store.revision()
    await store.put("/p/a", b"1")
    await store.put("/p/b", b"1")
    await store.delete("/p/b")  # deleted in the gap: not replayed
    read_at = await store.put("/q/x", b"1")  # outside the prefix
    changes = follow(store, "/p/", start, "test")
    replayed = [await anext(changes)]
    cut_again = await store.put("/p/c", b"2")  # comes in the second re-read
    again = await anext(changes)
    last = await store.put("/p/d", b"3")
    live = await anext(changes)  # the watch itself, at last
    await changes.aclose()
    assert [(e.type, e.key, e.value) for e in replayed] == [("put", "/p/a", b"1")]
    assert (again.key, again.revision, live.key, live.revision) == ("/p/c", cut_again, "/p/d", last)
    # each cut: re-read, then watched from the re-read's revision (no event twice)
    assert store.watched == [start, read_at, cut_again]


async def test_a_resync_retries_while_the_store_is_unreachable() -> None:
    store = Cut([StoreUnavailableError("down")])
    calls: list[int] = []

    async def resync(after: int) -> tuple[int, list[WatchEvent]]:
        calls.append(after)
        if len(calls) < 3:
            raise StoreUnavailableError("still down")
        return after, [WatchEvent("put", "/p/x", b"v", after)]

    changes = follow(store, "/p/", 0, "test", resync)
    first = await anext(changes)
    await changes.aclose()
    assert calls == [0, 0, 0] and first.key == "/p/x"


async def test_a_closed_store_ends_the_follow() -> None:
    store = Cut([])
    changes = follow(store, "/p/", 0, "test")
    await store.put("/p/a", b"1")
    assert (await anext(changes)).key == "/p/a"  # watching now
    await store.close()
    assert [e async for e in changes] == []
