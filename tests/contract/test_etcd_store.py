"""What only ``EtcdStore`` does, against a real etcd member the tests start: failover
between endpoints, a clear 503 error when etcd cannot be reached, watches cut by
compaction, and etcd's per-transaction operation limit as invalid input."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.etcdlab import ETCDCTL, etcd_member
from virtfleet.errors import ConflictError, InvalidInputError, StoreUnavailableError
from virtfleet.state.audit import AuditLog
from virtfleet.state.bulk import MAX_TXN_OPS
from virtfleet.state.etcd import EtcdStore
from virtfleet.state.keys import AUDIT
from virtfleet.state.store import Put

from .test_store import take


@pytest.fixture(scope="module")
def etcd_url() -> Iterator[str]:
    with etcd_member() as url:
        yield url


def _nobody_listens() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


async def test_unreachable_etcd_is_store_unavailable(tmp_path: Path) -> None:
    """No etcd at the endpoint: every call fails with a 503 ``store_unavailable``."""
    store = EtcdStore([_nobody_listens()], namespace=f"/t{tmp_path}", timeout_s=0.5)
    try:
        with pytest.raises(StoreUnavailableError) as err:
            await store.put("/k", b"v")
        assert (err.value.code, err.value.status) == ("store_unavailable", 503)
        assert "etcd is unavailable" in str(err.value)
    finally:
        await store.close()


async def test_a_dead_endpoint_fails_over_to_a_live_one(etcd_url: str, tmp_path: Path) -> None:
    """With the first endpoint dead, the store works through the second."""
    store = EtcdStore([_nobody_listens(), etcd_url], namespace=f"/t{tmp_path}", timeout_s=5)
    try:
        rev = await store.put("/k", b"v")
        kv = await store.get("/k")
        assert kv is not None and kv.mod_revision == rev
    finally:
        await store.close()


async def test_watch_from_a_compacted_revision_names_it(etcd_url: str, tmp_path: Path) -> None:
    """A watch from before etcd's compaction point ends with ConflictError(compacted=...),
    so the caller re-lists and re-watches; one from after it works."""
    store = EtcdStore([etcd_url], namespace=f"/t{tmp_path}")
    try:
        first = await store.put("/c/1", b"1")
        await store.put("/c/2", b"2")
        last = await store.put("/c/3", b"3")
        compact = await asyncio.create_subprocess_exec(
            ETCDCTL, "--endpoints", etcd_url, "compact", str(last),
            stdout=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        assert await compact.wait() == 0
        with pytest.raises(ConflictError, match="compacted") as err:
            await anext(store.watch("/c/", after_revision=first))
        assert err.value.details["compacted"] >= last
        watch = store.watch("/c/", after_revision=last)
        rev = await store.put("/c/4", b"4")
        assert [(e.key, e.revision) for e in await take(watch, 1)] == [("/c/4", rev)]
    finally:
        await store.close()


async def test_a_txn_over_etcds_operation_limit_is_refused(etcd_url: str, tmp_path: Path) -> None:
    """etcd caps operations per transaction (128 by default): a bigger one is invalid input
    and writes nothing."""
    store = EtcdStore([etcd_url], namespace=f"/t{tmp_path}")
    try:
        with pytest.raises(InvalidInputError, match="too many operations"):
            await store.txn([], [Put(f"/many/{i}", b"x") for i in range(200)])
        assert await store.count("/many/") == 0
    finally:
        await store.close()


async def test_close_ends_a_waiting_watch(etcd_url: str, tmp_path: Path) -> None:
    """Closing the store ends its watches instead of leaving them waiting forever."""
    store = EtcdStore([etcd_url], namespace=f"/t{tmp_path}")
    watch = store.watch("/w/", after_revision=await store.revision())
    waiting = asyncio.ensure_future(anext(watch))
    await asyncio.sleep(0.2)
    await store.close()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(waiting, 5)


async def test_audit_prune_of_more_than_a_txn_holds(etcd_url: str, tmp_path: Path) -> None:
    """Pruning 300 audit entries at once works on etcd (one txn of 300 deletes would be
    refused): the deletes go in batches of ``MAX_TXN_OPS``."""
    store = EtcdStore([etcd_url], namespace=f"/t{tmp_path}")
    try:
        log = AuditLog(store, max_entries=10)
        await store.txn([], [Put(f"{AUDIT}{i:020d}-x", b"{}") for i in range(100)])
        await store.txn([], [Put(f"{AUDIT}{i:020d}-y", b"{}") for i in range(100, 200)])
        await store.txn([], [Put(f"{AUDIT}{i:020d}-z", b"{}") for i in range(200, 310)])
        assert MAX_TXN_OPS < 300
        assert await log.prune() == 300
        assert await store.count(AUDIT) == 10
    finally:
        await store.close()


def test_a_store_made_before_its_event_loop_runs_works_in_it(etcd_url: str, tmp_path: Path) -> None:
    """The daemon builds its store before ``asyncio.run``: gRPC channels belong to the loop
    they are made in, so the store connects on first use, inside the loop."""
    store = EtcdStore([etcd_url], namespace=f"/t{tmp_path}")

    async def use() -> bool:
        try:
            rev = await store.put("/k", b"v")
            kv = await store.get("/k")
            return kv is not None and kv.mod_revision == rev
        finally:
            await store.close()

    assert asyncio.run(use())
