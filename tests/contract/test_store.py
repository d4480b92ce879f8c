"""The ``StateStore`` contract, run against every implementation.

Every test taking the ``store`` fixture runs once per entry of ``IMPLEMENTATIONS``;
a new store (e.g. ``EtcdStore``) joins the suite by adding one entry there. The
contract tests only use what the protocol promises. Tests at the end cover what
only the local stores (``MemoryStore``, ``SQLiteStore``) provide: compaction
with a configurable history, persistence across reopen, exclusive file use.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.etcdlab import etcd_member
from virtfleet.errors import (
    ConflictError,
    InUseError,
    InvalidInputError,
    NotFoundError,
    RevisionConflictError,
    VirtfleetError,
)
from virtfleet.state import sqlite as sqlite_module
from virtfleet.state._watch import WatchHub
from virtfleet.state.etcd import EtcdStore
from virtfleet.state.memory import MemoryStore
from virtfleet.state.sqlite import SQLiteStore
from virtfleet.state.store import Compare, Delete, Put, StateStore, WatchEvent

IMPLEMENTATIONS: dict[str, Callable[[Path, str], StateStore]] = {
    "memory": lambda tmp, etcd: MemoryStore(),
    "sqlite": lambda tmp, etcd: SQLiteStore(tmp / "state.db"),
    # One etcd for the module; each test under its own prefix (tmp_path is unique).
    "etcd": lambda tmp, etcd: EtcdStore([etcd], namespace=f"/test{tmp}"),
}
WAIT_S = 2.0  # generous bound for anything that should happen "soon"
TTL_S = 0.3


@pytest.fixture(params=sorted(IMPLEMENTATIONS))
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StateStore]:
    etcd = request.getfixturevalue("etcd_url") if request.param == "etcd" else ""
    impl = IMPLEMENTATIONS[request.param](tmp_path, etcd)
    yield impl
    await impl.close()


@pytest.fixture(scope="module")
def etcd_url() -> Iterator[str]:
    with etcd_member() as url:
        yield url


@pytest.fixture
async def base(store: StateStore) -> int:
    """The store's revision before the test wrote anything: 0 for a local store, etcd's
    current revision for an etcd one (other prefixes' writes counted too)."""
    return await store.revision()


def lease_ttl(store: StateStore, ttl_s: float) -> float:
    """The lease time ``grant_lease(ttl_s)`` really gives: etcd counts whole seconds."""
    return max(1.0, math.ceil(ttl_s)) if isinstance(store, EtcdStore) else ttl_s


def expiry_slack(store: StateStore) -> float:
    """How long after its TTL a lease may still live (etcd checks expiry every 500 ms)."""
    return 1.5 if isinstance(store, EtcdStore) else 0.2


async def take(
    watch: AsyncIterator[WatchEvent], n: int, within: float = WAIT_S
) -> list[WatchEvent]:
    """The next ``n`` events of ``watch``, failing if they do not come ``within`` seconds."""

    async def collect() -> list[WatchEvent]:
        return [await anext(watch) for _ in range(n)]

    return await asyncio.wait_for(collect(), within)


async def nothing_more(watch: AsyncIterator[WatchEvent], wait: float = 0.2) -> bool:
    """True if ``watch`` yields nothing for ``wait`` seconds."""
    try:
        await asyncio.wait_for(anext(watch), wait)
    except TimeoutError:
        return True
    return False


def summary(events: list[WatchEvent]) -> list[tuple[str, str, int]]:
    return [(e.type, e.key, e.revision) for e in events]


# -- keys, revisions, versions ------------------------------------------------


async def test_empty_store(store: StateStore, base: int) -> None:
    """An empty store has no keys, get of a missing key is None, reads make no revision."""
    assert await store.revision() == base
    assert await store.get("/missing") is None
    assert await store.list("") == []


async def test_put_get_revisions_and_versions(store: StateStore, base: int) -> None:
    """Each put bumps the global revision; a key keeps create_revision and counts versions."""
    assert await store.put("/a", b"1") == base + 1
    assert await store.put("/b", b"x") == base + 2
    assert await store.put("/a", b"2") == base + 3
    a = await store.get("/a")
    assert a is not None
    assert (a.key, a.value, a.create_revision, a.mod_revision, a.version) == (
        "/a", b"2", base + 1, base + 3, 2
    )  # fmt: skip
    assert a.lease is None
    assert await store.revision() == base + 3


async def test_recreate_resets_version(store: StateStore) -> None:
    """Deleting and re-creating a key starts a new life: version 1, new create_revision."""
    await store.put("/k", b"1")
    await store.put("/k", b"2")
    await store.delete("/k")
    rev = await store.put("/k", b"3")
    kv = await store.get("/k")
    assert kv is not None
    assert (kv.create_revision, kv.mod_revision, kv.version) == (rev, rev, 1)


async def test_put_cas(store: StateStore) -> None:
    """put(expect_revision) writes only if the key's mod_revision matches, else conflicts."""
    first = await store.put("/k", b"1")
    second = await store.put("/k", b"2", expect_revision=first)
    with pytest.raises(RevisionConflictError):
        await store.put("/k", b"stale", expect_revision=first)
    with pytest.raises(RevisionConflictError):
        await store.put("/other", b"x", expect_revision=first)
    kv = await store.get("/k")
    assert kv is not None and kv.value == b"2" and kv.mod_revision == second
    assert await store.revision() == second


async def test_put_expect_zero_means_absent(store: StateStore) -> None:
    """put(expect_revision=0) creates a missing key and conflicts on an existing one."""
    rev = await store.put("/k", b"1", expect_revision=0)
    with pytest.raises(RevisionConflictError):
        await store.put("/k", b"2", expect_revision=0)
    kv = await store.get("/k")
    assert kv is not None and kv.value == b"1"
    assert await store.revision() == rev


async def test_delete_cas(store: StateStore) -> None:
    """delete(expect_revision) deletes only on a matching mod_revision, else conflicts."""
    rev = await store.put("/k", b"1")
    with pytest.raises(RevisionConflictError):
        await store.delete("/k", expect_revision=rev + 1)
    with pytest.raises(RevisionConflictError):
        await store.delete("/k", expect_revision=0)
    assert await store.get("/k") is not None
    assert await store.delete("/k", expect_revision=rev) is True
    assert await store.get("/k") is None
    with pytest.raises(RevisionConflictError):
        await store.delete("/k", expect_revision=rev)
    assert await store.delete("/k", expect_revision=0) is False


async def test_delete_is_idempotent(store: StateStore) -> None:
    """Deleting a missing key returns False and does not create a revision."""
    await store.put("/k", b"1")
    assert await store.delete("/k") is True
    rev = await store.revision()
    assert await store.delete("/k") is False
    assert await store.delete("/never") is False
    assert await store.revision() == rev


async def test_list_sorted_and_prefix_isolated(store: StateStore) -> None:
    """list(prefix) returns only keys under the prefix ('/a/' excludes '/ab/'), sorted."""
    for key in ["/a/2", "/ab/1", "/a/1", "/a", "/a/10", "/b/1"]:
        await store.put(key, key.encode())
    assert [kv.key for kv in await store.list("/a/")] == ["/a/1", "/a/10", "/a/2"]
    assert [kv.key for kv in await store.list("/ab/")] == ["/ab/1"]
    assert [kv.key for kv in await store.list("/c/")] == []
    everything = [kv.key for kv in await store.list("")]
    assert everything == sorted(everything) and len(everything) == 6
    assert [kv.value for kv in await store.list("/a/1")] == [b"/a/1", b"/a/10"]


async def test_list_pages_and_count(store: StateStore) -> None:
    """A bounded page of a prefix: below ``end``, ``limit`` keys, either order; ``count``."""
    for key in ["/a/1", "/a/2", "/a/3", "/a/4", "/ab/1", "/b/1"]:
        await store.put(key, key.encode())

    async def keys(**page: Any) -> list[str]:
        return [kv.key for kv in await store.list("/a/", **page)]

    assert await keys(limit=2) == ["/a/1", "/a/2"]
    assert await keys(descending=True, limit=3) == ["/a/4", "/a/3", "/a/2"]
    assert await keys(end="/a/3") == ["/a/1", "/a/2"]
    assert await keys(end="/a/3", descending=True, limit=1) == ["/a/2"]
    assert await keys(end="/a/1", descending=True) == []
    assert await keys(end="/z", descending=True) == ["/a/4", "/a/3", "/a/2", "/a/1"]
    assert (await store.count("/a/"), await store.count("/a"), await store.count("/c/")) == (
        4,
        5,
        0,
    )
    with pytest.raises(InvalidInputError):
        await store.list("/a/", limit=0)


async def test_delete_prefix_in_one_revision(store: StateStore) -> None:
    """delete_prefix removes every key under the prefix, only those, in one revision."""
    for key in ["/p/1", "/p/2", "/p/3/x", "/pq/1"]:
        await store.put(key, b"v")
    before = await store.revision()
    watch = store.watch("/", after_revision=before)
    assert await store.delete_prefix("/p/") == 3
    assert await store.revision() == before + 1
    assert [kv.key for kv in await store.list("/")] == ["/pq/1"]
    events = await take(watch, 3)
    assert summary(events) == [("delete", k, before + 1) for k in ["/p/1", "/p/2", "/p/3/x"]]
    assert await store.delete_prefix("/p/") == 0
    assert await store.revision() == before + 1


async def test_txn_success_is_atomic(store: StateStore) -> None:
    """A txn whose compares hold applies all success ops in one revision, in op order."""
    a = await store.put("/a", b"1")
    await store.put("/gone", b"x")
    before = await store.revision()
    watch = store.watch("/", after_revision=before)
    held = await store.txn(
        [Compare("/a", a), Compare("/new", 0)],
        [Put("/new", b"n"), Put("/a", b"2"), Delete("/gone"), Delete("/absent")],
        [Put("/failed", b"f")],
    )
    assert held.succeeded is True and held.revision == before + 1
    rev = before + 1
    assert await store.revision() == rev
    assert {kv.key: kv.mod_revision for kv in await store.list("/")} == {"/a": rev, "/new": rev}
    assert summary(await take(watch, 3)) == [
        ("put", "/new", rev),
        ("put", "/a", rev),
        ("delete", "/gone", rev),
    ]


async def test_txn_failure_branch(store: StateStore) -> None:
    """A txn with a failing compare applies only the failure ops, in one revision."""
    a = await store.put("/a", b"1")
    await store.put("/a", b"2")
    held = await store.txn(
        [Compare("/a", a)], [Put("/ok", b"s"), Delete("/a")], [Put("/f1", b"1"), Put("/f2", b"2")]
    )
    assert held.succeeded is False
    rev = await store.revision()
    assert rev == a + 2 == held.revision
    kvs = {kv.key: kv for kv in await store.list("/")}
    assert sorted(kvs) == ["/a", "/f1", "/f2"]
    assert kvs["/f1"].mod_revision == kvs["/f2"].mod_revision == rev


async def test_txn_without_effect_makes_no_revision(store: StateStore) -> None:
    """A txn that changes nothing (empty branch) reports its compares and adds no revision."""
    rev = await store.put("/a", b"1")
    missed = await store.txn([Compare("/a", rev + 99)], [Put("/b", b"x")])
    assert (missed.succeeded, missed.revision, bool(missed)) == (False, rev, False)
    held = await store.txn([Compare("/zz", 0)], [])
    assert (held.succeeded, held.revision, bool(held)) == (True, rev, True)
    assert await store.revision() == rev
    assert await store.get("/b") is None


async def test_txn_reports_its_own_revision_among_concurrent_writers(store: StateStore) -> None:
    """Each of many concurrent txns reports the revision its own writes carry, never a
    later writer's (``revision()`` read afterwards could be another commit's)."""

    async def write(i: int) -> tuple[str, int]:
        await asyncio.sleep(0)
        done = await store.txn([Compare(f"/c/{i}", 0)], [Put(f"/c/{i}", b"x")])
        await store.put(f"/other/{i}", b"y")  # another commit right after each
        return f"/c/{i}", done.revision

    reported = dict(await asyncio.gather(*(write(i) for i in range(20))))
    actual = {kv.key: kv.mod_revision for kv in await store.list("/c/")}
    assert reported == actual
    assert len(set(actual.values())) == 20


async def test_range_reports_the_revision_it_read(store: StateStore, base: int) -> None:
    """``range`` is ``list`` plus the revision read: a watch from there misses nothing."""
    await store.put("/r/a", b"1")
    await store.put("/elsewhere", b"2")
    found = await store.range("/r/")
    assert [kv.key for kv in found.kvs] == ["/r/a"]
    assert found.revision == base + 2 == await store.revision()
    page = await store.range("/r/", limit=1, descending=True)
    assert [kv.key for kv in page.kvs] == ["/r/a"] and page.revision == base + 2
    watch = store.watch("/r/", after_revision=found.revision)
    await store.put("/r/b", b"3")
    assert summary(await take(watch, 1)) == [("put", "/r/b", base + 3)]


async def test_txn_rejects_duplicate_keys(store: StateStore, base: int) -> None:
    """A txn branch may touch each key once (as etcd): duplicates are invalid input."""
    with pytest.raises(InvalidInputError):
        await store.txn([], [Put("/a", b"1"), Delete("/a")])
    assert await store.revision() == base


async def test_invalid_arguments(store: StateStore, base: int) -> None:
    """Empty keys, non-bytes values, negative revisions and bad TTLs are InvalidInputError."""
    with pytest.raises(InvalidInputError):
        await store.put("", b"x")
    with pytest.raises(InvalidInputError):
        await store.put("/k", "text")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        await store.put("/k", b"x", expect_revision=-1)
    with pytest.raises(InvalidInputError):
        await store.grant_lease(0)
    assert await store.revision() == base


# -- watch --------------------------------------------------------------------


async def test_watch_history_then_live(store: StateStore, base: int) -> None:
    """watch(after_revision) yields history then live changes, in order, without gaps or dups."""
    for i in range(1, 4):
        await store.put(f"/w/{i}", b"h")
    watch = store.watch("/w/", after_revision=base + 1)
    history = await take(watch, 2)
    await store.put("/w/4", b"l")
    await store.delete("/w/1")
    live = await take(watch, 2)
    assert summary(history + live) == [
        ("put", "/w/2", base + 2),
        ("put", "/w/3", base + 3),
        ("put", "/w/4", base + 4),
        ("delete", "/w/1", base + 5),
    ]
    assert [e.value for e in history + live] == [b"h", b"h", b"l", None]
    assert await nothing_more(watch)


async def test_watch_during_concurrent_writes(store: StateStore, base: int) -> None:
    """A watch opened while writes keep coming sees every later revision exactly once."""
    total = 60
    warmed_up = asyncio.Event()

    async def writer() -> None:
        for i in range(total):
            await store.put(f"/c/{i}", b"v")
            if i == 10:
                warmed_up.set()
            await asyncio.sleep(0)

    task = asyncio.create_task(writer())
    await warmed_up.wait()
    start = await store.revision()
    assert start < base + total
    watch = store.watch("/c/", after_revision=start - 5)
    events = await take(watch, base + total - start + 5)
    await task
    assert [e.revision for e in events] == list(range(start - 4, base + total + 1))
    assert await nothing_more(watch)


async def test_watch_from_none_sees_only_future(store: StateStore) -> None:
    """watch(after_revision=None) skips existing data and yields only later changes."""
    await store.put("/f/old", b"old")
    watch = store.watch("/f/")
    pending = asyncio.ensure_future(anext(watch))
    await asyncio.sleep(0.2)  # let lazily-started watches get going
    rev = await store.put("/f/new", b"new")
    event = await asyncio.wait_for(pending, WAIT_S)
    assert (event.type, event.key, event.value, event.revision) == ("put", "/f/new", b"new", rev)


async def test_watch_prefix_isolation(store: StateStore, base: int) -> None:
    """A watch on '/a/' does not see '/ab/' or other keys."""
    watch = store.watch("/a/", after_revision=base)
    await store.put("/ab/1", b"x")
    await store.put("/b", b"x")
    await store.put("/a/1", b"x")
    assert summary(await take(watch, 1)) == [("put", "/a/1", base + 3)]
    assert await nothing_more(watch)


async def test_two_concurrent_watchers(store: StateStore, base: int) -> None:
    """Two watchers on overlapping prefixes each get every matching change."""
    both = store.watch("/", after_revision=base)
    narrow = store.watch("/n/", after_revision=base)
    results = asyncio.gather(take(both, 4), take(narrow, 2))
    await store.put("/n/1", b"1")
    await store.put("/x/1", b"1")
    await store.txn([], [Put("/n/2", b"2"), Put("/x/2", b"2")])
    all_events, narrow_events = await results
    assert summary(all_events) == [
        ("put", "/n/1", base + 1),
        ("put", "/x/1", base + 2),
        ("put", "/n/2", base + 3),
        ("put", "/x/2", base + 3),
    ]
    assert summary(narrow_events) == [("put", "/n/1", base + 1), ("put", "/n/2", base + 3)]


# -- leases -------------------------------------------------------------------


async def test_lease_expiry_deletes_keys_with_events(store: StateStore) -> None:
    """When a lease expires its keys are deleted, with delete events, without any other call."""
    lease = await store.grant_lease(TTL_S)
    await store.put("/l/a", b"1", lease=lease)
    await store.put("/l/b", b"2", lease=lease)
    await store.put("/l/keep", b"3")
    kv = await store.get("/l/a")
    assert kv is not None and kv.lease == lease
    watch = store.watch("/l/", after_revision=await store.revision())
    events = await take(watch, 2, within=lease_ttl(store, TTL_S) + expiry_slack(store) + 1.0)
    assert [(e.type, e.key) for e in events] == [("delete", "/l/a"), ("delete", "/l/b")]
    assert events[0].revision == events[1].revision
    assert [kv.key for kv in await store.list("/l/")] == ["/l/keep"]


async def test_keepalive_extends_lease(store: StateStore) -> None:
    """keepalive renews a lease for its TTL, so its keys outlive the original TTL."""
    lease = await store.grant_lease(0.5)
    ttl = lease_ttl(store, 0.5)
    await store.put("/k", b"v", lease=lease)
    for _ in range(8):
        await asyncio.sleep(ttl / 5)
        await store.keepalive(lease)
    assert await store.get("/k") is not None  # 1.6 x TTL after the grant
    watch = store.watch("/", after_revision=await store.revision())
    within = ttl + expiry_slack(store) + 1.0
    assert [e.type for e in await take(watch, 1, within=within)] == ["delete"]
    assert await store.get("/k") is None


async def test_keepalive_on_expired_or_unknown_lease(store: StateStore) -> None:
    """keepalive on an expired, revoked or never-granted lease raises NotFoundError."""
    expired = await store.grant_lease(0.1)
    revoked = await store.grant_lease(5)
    await store.revoke(revoked)
    await asyncio.sleep(lease_ttl(store, 0.1) + expiry_slack(store))
    for lease in (expired, revoked, 123456789):
        with pytest.raises(NotFoundError):
            await store.keepalive(lease)


async def test_revoke_deletes_keys_in_one_revision(store: StateStore) -> None:
    """revoke deletes every key of the lease in one revision; unknown leases are ignored."""
    lease = await store.grant_lease(5)
    await store.put("/r/1", b"1", lease=lease)
    await store.put("/r/2", b"2", lease=lease)
    await store.put("/r/3", b"3")
    before = await store.revision()
    await store.revoke(lease)
    assert await store.revision() == before + 1
    assert [kv.key for kv in await store.list("/r/")] == ["/r/3"]
    await store.revoke(lease)
    await store.revoke(987654321)
    assert await store.revision() == before + 1
    with pytest.raises(NotFoundError):
        await store.put("/r/4", b"4", lease=lease)


async def test_put_without_lease_detaches_key(store: StateStore) -> None:
    """Rewriting a leased key without a lease detaches it: revoking the lease keeps it."""
    lease = await store.grant_lease(5)
    await store.put("/d", b"1", lease=lease)
    await store.put("/d", b"2")
    await store.revoke(lease)
    kv = await store.get("/d")
    assert kv is not None and kv.value == b"2" and kv.lease is None


async def test_put_with_unknown_lease(store: StateStore, base: int) -> None:
    """put (or a txn Put) with a lease that does not exist raises NotFoundError, writing nothing."""
    with pytest.raises(NotFoundError):
        await store.put("/k", b"v", lease=424242)
    with pytest.raises(NotFoundError):
        await store.txn([], [Put("/a", b"1"), Put("/b", b"2", lease=424242)])
    assert await store.revision() == base
    assert await store.list("") == []


# -- local stores only ----------------------------------------------------------

LOCAL: dict[str, Callable[[Path, int], MemoryStore | SQLiteStore]] = {
    "memory": lambda tmp, history: MemoryStore(history=history),
    "sqlite": lambda tmp, history: SQLiteStore(tmp / "state.db", history=history),
}


@pytest.mark.parametrize("kind", sorted(LOCAL))
async def test_a_new_local_store_is_at_revision_0(kind: str, tmp_path: Path) -> None:
    """A new local store starts at revision 0 (etcd starts at 1: see ``base``)."""
    store = LOCAL[kind](tmp_path, 5)
    try:
        assert await store.revision() == 0
    finally:
        await store.close()


@pytest.mark.parametrize("kind", sorted(LOCAL))
async def test_watch_from_compacted_revision(kind: str, tmp_path: Path) -> None:
    """Watching from a revision older than the kept history raises ConflictError."""
    store = LOCAL[kind](tmp_path, 5)
    try:
        for i in range(30):
            await store.put(f"/k/{i}", b"v")
        with pytest.raises(ConflictError, match="compacted"):
            await anext(store.watch("/k/", after_revision=1))
        recent = store.watch("/k/", after_revision=27)
        assert [e.revision for e in await take(recent, 3)] == [28, 29, 30]
    finally:
        await store.close()


@pytest.mark.parametrize("kind", sorted(LOCAL))
async def test_watch_registers_at_call(kind: str, tmp_path: Path) -> None:
    """A local watch(None) counts from the call itself: a write right after it is seen."""
    store = LOCAL[kind](tmp_path, 100)
    try:
        watch = store.watch("/")
        rev = await store.put("/x", b"1")
        assert summary(await take(watch, 1)) == [("put", "/x", rev)]
    finally:
        await store.close()


@pytest.mark.parametrize("kind", sorted(LOCAL))
async def test_close_ends_watchers(kind: str, tmp_path: Path) -> None:
    """Closing a local store lets its watchers drain what they buffered, then stop."""
    store = LOCAL[kind](tmp_path, 100)
    watch = store.watch("/", after_revision=0)
    await store.put("/x", b"1")
    await store.close()
    assert summary([event async for event in watch]) == [("put", "/x", 1)]


async def test_slow_watcher_is_cut_off_at_a_revision_boundary() -> None:
    """A watcher that falls too far behind keeps whole revisions, then gets ConflictError."""
    hub = WatchHub(max_pending=3)
    watch = hub.subscribe("/", 0, [])
    hub.publish([WatchEvent("put", "/a", b"1", 1), WatchEvent("put", "/b", b"1", 1)])
    hub.publish([WatchEvent("put", "/c", b"1", 2), WatchEvent("put", "/d", b"1", 2)])
    hub.publish([WatchEvent("put", "/e", b"1", 3)])
    assert [e.key for e in await take(watch, 2)] == ["/a", "/b"]
    with pytest.raises(ConflictError, match="after revision 1"):
        await anext(watch)


async def test_sqlite_reopen_keeps_data_and_revision(tmp_path: Path) -> None:
    """Reopening the SQLite file gives back the same keys, metadata, revision and history."""
    path = tmp_path / "state.db"
    store = SQLiteStore(path)
    await store.put("/a", b"1")
    await store.put("/a", b"2")
    await store.txn([], [Put("/b", b"\x00\xff"), Put("/c", b"")])
    await store.delete("/c")
    before = await store.list("")
    await store.close()

    store = SQLiteStore(path)
    try:
        assert await store.revision() == 4
        assert await store.list("") == before
        history = await take(store.watch("/", after_revision=0), 5)
        assert summary(history)[-1] == ("delete", "/c", 4)
        assert await store.put("/a", b"3") == 5
    finally:
        await store.close()


async def test_sqlite_lease_survives_reopen(tmp_path: Path) -> None:
    """A lease outlives a reopen with its remaining time, then expires and deletes its keys."""
    path = tmp_path / "state.db"
    store = SQLiteStore(path)
    lease = await store.grant_lease(0.8)
    await store.put("/l", b"v", lease=lease)
    await store.close()

    store = SQLiteStore(path)
    try:
        kv = await store.get("/l")
        assert kv is not None and kv.lease == lease
        watch = store.watch("/", after_revision=await store.revision())
        events = await take(watch, 1, within=0.8 + 1.0)
        assert summary(events) == [("delete", "/l", 2)]
        with pytest.raises(NotFoundError):
            await store.keepalive(lease)
    finally:
        await store.close()


async def test_sqlite_file_is_exclusive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A second SQLiteStore on a file that is already open fails with InUseError."""
    monkeypatch.setattr(sqlite_module, "LOCK_TIMEOUT_S", 0.05)
    path = tmp_path / "state.db"
    store = SQLiteStore(path)
    try:
        with pytest.raises(InUseError):
            SQLiteStore(path)
    finally:
        await store.close()
    await SQLiteStore(path).close()  # free again once the owner closed it


async def test_sqlite_rejects_foreign_file(tmp_path: Path) -> None:
    """Opening a file that is not a SQLite database raises a VirtfleetError, not sqlite3's."""
    path = tmp_path / "state.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(VirtfleetError, match="state file"):
        SQLiteStore(path)
