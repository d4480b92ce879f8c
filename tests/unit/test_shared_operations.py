"""Operation runners of two daemons (two host ids) on one store: each fails only its own
interrupted operations on restart, and operations on one target take turns across both
(the order is in the store), also after a daemon dies holding a turn."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from virtfleet.model.operation import OperationStatus
from virtfleet.service.operations import INTERRUPTED, OpContext, OperationRunner
from virtfleet.state.locks import Session
from virtfleet.state.memory import MemoryStore
from virtfleet.state.repos import EventLog
from virtfleet.state.store import StateStore

from ..yielding import yielding


@pytest.fixture
async def store() -> AsyncIterator[StateStore]:
    made = MemoryStore()
    yield yielding(made)
    await made.close()


def runner(store: StateStore, host: str, ttl_s: float = 10.0) -> OperationRunner:
    return OperationRunner(store, EventLog(store), host_id=host, session=Session(store, ttl_s))


def gated(
    gate: asyncio.Event, log: list[str], name: str, began: asyncio.Event | None = None
) -> Any:
    async def work(ctx: OpContext) -> dict[str, Any]:
        log.append(f"{name} begins")
        if began is not None:
            began.set()
        await gate.wait()
        log.append(f"{name} ends")
        return {}

    return work


async def test_a_restarted_daemon_fails_only_its_own_operations(store: StateStore) -> None:
    """Daemon A dies with an operation running; its restart fails that one as interrupted
    and leaves daemon B's running operation alone, which then finishes normally."""
    gate, log = asyncio.Event(), []
    a, b = runner(store, "host-a"), runner(store, "host-b")
    op_a = await a.submit("test.slow", "instance/x", gated(asyncio.Event(), log, "a"))
    op_b = await b.submit("test.slow", "instance/y", gated(gate, log, "b"))
    assert (op_a.host, op_b.host) == ("host-a", "host-b")
    restarted = runner(store, "host-a")  # A's process is gone; its records say running
    assert await restarted.recover() == 1
    assert (await restarted.get(op_a.id)).error_message == INTERRUPTED
    assert (await restarted.get(op_b.id)).status == OperationStatus.RUNNING
    assert b.active(op_b.id)
    gate.set()
    assert (await b.wait(op_b.id, 5)).status == OperationStatus.SUCCESS
    await b.close()
    await a.close()


async def test_one_target_takes_turns_across_daemons(store: StateStore) -> None:
    """An operation submitted on daemon B waits (pending) for A's running one on the same
    target, then runs; one on another target runs at once."""
    gate, log, began = asyncio.Event(), [], asyncio.Event()
    a, b = runner(store, "host-a"), runner(store, "host-b")
    first = await a.submit("test.slow", "instance/x", gated(gate, log, "first"))
    second = await b.submit("test.slow", "instance/x", gated(asyncio.Event(), log, "second", began))
    other = await b.submit("test.quick", "instance/z", gated(asyncio.Event(), log, "other"))
    assert (first.status, second.status, other.status) == ("running", "pending", "running")
    assert not await b.idle("instance/x") and not await a.idle("instance/z")
    await b.cancel(other.id)
    assert "second begins" not in log
    gate.set()
    assert (await a.wait(first.id, 5)).status == OperationStatus.SUCCESS
    await asyncio.wait_for(began.wait(), 5)
    assert log.index("first ends") < log.index("second begins")
    await b.cancel(second.id)
    assert await a.idle("instance/x")
    await a.close()
    await b.close()


async def test_a_dead_daemons_turn_ends_with_its_lease(store: StateStore) -> None:
    """Daemon A dies in the middle of an operation: B's operation on the same target runs
    once A's lease ends (as it does when a dead daemon stops renewing it), not before."""
    log: list[str] = []
    session_a = Session(store)
    a = OperationRunner(store, EventLog(store), host_id="host-a", session=session_a)
    b = runner(store, "host-b")
    await a.submit("test.slow", "instance/x", gated(asyncio.Event(), log, "a"))
    second = await b.submit("test.quick", "instance/x", quick)
    assert second.status == OperationStatus.PENDING
    assert (await b.wait(second.id, 0.05)).status == OperationStatus.PENDING
    await store.revoke(await session_a.lease())  # what its expiry does
    done = await b.wait(second.id, 5)
    assert done.status == OperationStatus.SUCCESS
    await b.close()
    await a.close()
    await session_a.close()


async def quick(ctx: OpContext) -> dict[str, Any]:
    return {"ok": True}
