"""Store claims and leader election (state/locks.py, state/leader.py) on both local stores:
claims are granted in the order asked, a holder's lease ending frees its claim, one
candidate leads at a time, loses the lead when its lease expires, and resigns on stop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from virtfleet.errors import ConflictError, StoreUnavailableError
from virtfleet.state import leader as leader_module
from virtfleet.state.leader import Leadership
from virtfleet.state.locks import Claims, Session
from virtfleet.state.memory import MemoryStore
from virtfleet.state.sqlite import SQLiteStore
from virtfleet.state.store import Put, StateStore, WatchEvent

WAIT_S = 5.0


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StateStore]:
    made: StateStore = MemoryStore() if request.param == "memory" else SQLiteStore(tmp_path / "s")
    yield made
    await made.close()


async def test_claims_are_granted_in_the_order_asked(store: StateStore) -> None:
    """Three holders from two sessions queue on one name: each gets it after the one
    before it released, in the order they asked; another name is free meanwhile."""
    sessions = [Session(store), Session(store)]
    claims = [Claims(store, s, "test", f"host{i}") for i, s in enumerate(sessions)]
    keys = [await claims[i % 2].ask("x") for i in range(3)]
    assert [await claims[0].first(k) for k in keys] == [True, False, False]
    order: list[int] = []

    async def hold(i: int) -> None:
        await claims[i % 2].wait(keys[i])
        order.append(i)
        await claims[i % 2].release(keys[i])

    waiting = [asyncio.create_task(hold(i)) for i in (2, 1)]
    async with claims[1].held("other"):  # another name: not in this line
        pass
    await claims[0].release(keys[0])
    await asyncio.wait_for(asyncio.gather(*waiting), WAIT_S)
    assert order == [1, 2]
    for session in sessions:
        await session.close()


async def test_a_lost_lease_frees_the_claim(store: StateStore) -> None:
    """A holder whose lease ends (its daemon died) gives the claim to the next in line,
    and a claim asked for twice is refused."""
    dead, alive = Session(store), Session(store)
    first = await Claims(store, dead, "test", "a").ask("x", ticket="t1")
    with pytest.raises(ConflictError):
        await Claims(store, dead, "test", "a").ask("x", ticket="t1")
    second = await Claims(store, alive, "test", "b").ask("x")
    assert not await Claims(store, alive, "test", "b").first(second)
    await store.revoke(await dead.lease())  # what its expiry does
    await asyncio.wait_for(Claims(store, alive, "test", "b").wait(second), WAIT_S)
    assert await store.get(first) is None
    await alive.close()
    await dead.close()


async def test_one_leader_at_a_time(store: StateStore) -> None:
    """The first candidate leads; the second waits; the leader's lease expiring deposes
    it (its fenced writes then fail) and elects the other; stop resigns at once."""
    a, b = Leadership(store, "test", "a"), Leadership(store, "test", "b")
    a.start()
    await asyncio.wait_for(a.wait_elected(), WAIT_S)
    b.start()
    fence = a.fence()
    assert await store.txn([fence], [Put("/fenced", b"a")])
    assert not b.leading
    kv = await store.get(fence.key)
    assert kv is not None and kv.lease is not None
    await store.revoke(kv.lease)  # a's lease expires (its daemon stalled)
    await asyncio.wait_for(b.wait_elected(), WAIT_S)
    await asyncio.wait_for(a.wait_deposed(), WAIT_S)
    assert not await store.txn([fence], [Put("/fenced", b"stale a")])
    with pytest.raises(ConflictError):
        a.fence()
    await b.stop()  # resigns: a (campaigning again) leads
    await asyncio.wait_for(a.wait_elected(), WAIT_S)
    assert not b.leading
    await a.stop()


async def test_a_restarted_process_revokes_its_own_dead_claims(tmp_path: Path) -> None:
    """A daemon killed holding a claim (SQLite keeps its lease) restarts: its new session
    of the same name revokes the old lease, so it does not wait for its own dead claim."""
    path = tmp_path / "state.db"
    store = SQLiteStore(path)
    old = Session(store, name="host-a")
    await Claims(store, old, "test", "host-a").ask("x", ticket="dead")
    await store.close()  # killed: nothing released, the lease is on disk
    await old.close()  # (its renewal task; the closed store revokes nothing)
    store = SQLiteStore(path)
    assert await store.get("/claims/test/x/dead") is not None
    new = Session(store, name="host-a")
    claims = Claims(store, new, "test", "host-a")
    key = await claims.ask("x")
    assert await claims.first(key)
    assert await store.get("/claims/test/x/dead") is None
    other = Session(store, name="host-b")  # another name leaves host-a's session alone
    await Claims(store, other, "test", "host-b").ask("x")
    assert await claims.first(key)
    await new.close()
    await other.close()
    await store.close()


class _Outage(MemoryStore):
    """The first watch ends as etcd's does when it goes away; ``rewatched`` once a later
    watch starts (the leader watching its key again)."""

    def __init__(self) -> None:
        super().__init__()
        self.watches = 0
        self.rewatched = asyncio.Event()

    def watch(self, prefix: str, after_revision: int | None = None) -> AsyncIterator[WatchEvent]:
        self.watches += 1
        if self.watches == 1:
            return _unavailable()
        self.rewatched.set()
        return super().watch(prefix, after_revision)


async def _unavailable() -> AsyncIterator[WatchEvent]:
    raise StoreUnavailableError("etcd is unavailable")
    yield  # pragma: no cover (makes this an async generator)


async def test_the_leader_campaigns_again_after_a_store_outage(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A watch cut by an outage costs the lead for a moment, not for good."""
    monkeypatch.setattr(leader_module, "RETRY_S", (0.0,))
    store = _Outage()
    leader = Leadership(store, "singletons", "host-a")
    leader.start()
    try:
        async with asyncio.timeout(WAIT_S):
            await store.rewatched.wait()
            await leader.wait_elected()
        assert leader.leading and store.watches == 2
    finally:
        await leader.stop()
        await store.close()
