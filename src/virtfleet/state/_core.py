"""The shared engine of the in-process stores: etcd v3 semantics over a small backend.

``CoreStore`` implements the whole ``StateStore`` contract once — argument
checks, compare-and-swap, transactions, revisions and versions, leases and
their expiry sweeper, watch history and fan-out — for every store that keeps
its data locally. A backend (``MemoryStore``, ``SQLiteStore``) only reads keys,
applies a committed ``Batch`` atomically, keeps leases and a bounded change
history; it is called synchronously, from the event loop, under the store lock.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import secrets
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from virtfleet.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    RevisionConflictError,
    VirtfleetError,
)
from virtfleet.state import checks
from virtfleet.state._watch import Watcher, WatchHub
from virtfleet.state.store import Compare, Delete, KeyValue, Put, Range, TxnResult, WatchEvent

log = logging.getLogger(__name__)

DEFAULT_HISTORY = 10_000
SWEEP_RETRY_S = 1.0
_LEASE_ID_BITS = 53  # lease ids stay exact in JSON numbers


@dataclass(frozen=True)
class Lease:
    id: int
    ttl: float
    expiry: float  # in the store's clock (``CoreStore._now``)


class Page(NamedTuple):
    """A bounded slice of a prefix scan: keys below ``end``, ``limit`` of them, in order."""

    end: str | None
    limit: int | None
    descending: bool


class Change(NamedTuple):
    event: WatchEvent
    kv: KeyValue | None  # the key's new state for puts, None for deletes


@dataclass(frozen=True)
class Batch:
    """What one commit writes: the changes of one revision, and a lease to forget."""

    revision: int
    changes: list[Change]
    drop_lease: int | None = None


class CoreStore(ABC):
    """A ``StateStore`` whose data lives in a backend the subclass provides."""

    def __init__(self, *, history: int, revision: int, leases: Iterable[Lease]) -> None:
        if not isinstance(history, int) or history < 1:
            raise InvalidInputError("history must be a positive number of changes")
        self._history_limit = history
        self._revision = revision
        self._leases = {lease.id: lease for lease in leases}
        self._hub = WatchHub()
        self._lock = asyncio.Lock()
        self._lease_added = asyncio.Event()
        self._sweeper: asyncio.Task[None] | None = None
        self._closed = False
        with contextlib.suppress(RuntimeError):  # no running loop: start on first call
            self._ensure_sweeper()

    # -- backend ------------------------------------------------------------

    @abstractmethod
    def _read(self, key: str) -> KeyValue | None: ...

    @abstractmethod
    def _scan(self, prefix: str, page: Page | None = None) -> builtins.list[KeyValue]:
        """Live keys starting with ``prefix``, sorted by key; only ``page`` of them if given."""

    @abstractmethod
    def _count(self, prefix: str) -> int:
        """How many live keys start with ``prefix``."""

    @abstractmethod
    def _lease_keys(self, lease: int) -> builtins.list[str]:
        """Live keys attached to ``lease``, sorted."""

    @abstractmethod
    def _write(self, batch: Batch) -> None:
        """Apply ``batch`` atomically: keys, change history, revision, dropped lease."""

    @abstractmethod
    def _save_lease(self, lease: Lease) -> None: ...

    @abstractmethod
    def _history(self, prefix: str, after: int) -> builtins.list[WatchEvent]:
        """Kept changes under ``prefix`` with revision > ``after``, in order."""

    @abstractmethod
    def _compacted_revision(self) -> int:
        """The newest revision whose changes are no longer kept (0 = all kept)."""

    @abstractmethod
    def _release(self) -> None:
        """Free the backend's resources; called once, from ``close``."""

    def _now(self) -> float:
        return time.monotonic()

    # -- keys ---------------------------------------------------------------

    async def get(self, key: str) -> KeyValue | None:
        checks.check_key(key)
        async with self._op():
            return self._read(key)

    async def list(
        self,
        prefix: str,
        *,
        end: str | None = None,
        limit: int | None = None,
        descending: bool = False,
    ) -> builtins.list[KeyValue]:
        found = await self.range(prefix, end=end, limit=limit, descending=descending)
        return found.kvs

    async def range(
        self,
        prefix: str,
        *,
        end: str | None = None,
        limit: int | None = None,
        descending: bool = False,
    ) -> Range:
        checks.check_prefix(prefix)
        if limit is not None and (not isinstance(limit, int) or limit < 1):
            raise InvalidInputError("limit must be a positive number of keys")
        page = (
            None
            if end is None and limit is None and not descending
            else Page(end, limit, descending)
        )
        async with self._op():
            return Range(self._scan(prefix, page), self._revision)

    async def count(self, prefix: str) -> int:
        checks.check_prefix(prefix)
        async with self._op():
            return self._count(prefix)

    async def revision(self) -> int:
        async with self._op():
            return self._revision

    async def put(
        self,
        key: str,
        value: bytes,
        *,
        expect_revision: int | None = None,
        lease: int | None = None,
    ) -> int:
        checks.check_key(key)
        checks.check_value(value)
        checks.check_revision(expect_revision, "expect_revision")
        checks.check_lease_id(lease, optional=True)
        async with self._op():
            old = self._read(key)
            _compare(key, old, expect_revision)
            self._require_lease(lease)
            return self._commit([self._put_change(key, value, lease, old)])

    async def delete(self, key: str, *, expect_revision: int | None = None) -> bool:
        checks.check_key(key)
        checks.check_revision(expect_revision, "expect_revision")
        async with self._op():
            old = self._read(key)
            _compare(key, old, expect_revision)
            if old is None:
                return False
            self._commit([self._delete_change(key)])
            return True

    async def delete_prefix(self, prefix: str) -> int:
        checks.check_prefix(prefix)
        if not prefix:
            raise InvalidInputError("delete_prefix needs a non-empty prefix")
        async with self._op():
            keys = [kv.key for kv in self._scan(prefix)]
            self._commit([self._delete_change(key) for key in keys])
            return len(keys)

    async def txn(
        self,
        compares: Sequence[Compare],
        success: Sequence[Put | Delete],
        failure: Sequence[Put | Delete] = (),
    ) -> TxnResult:
        checks.check_compares(compares)
        checks.check_ops(success)
        checks.check_ops(failure)
        async with self._op():
            held = all(_mod_revision(self._read(c.key)) == c.mod_revision for c in compares)
            ops = success if held else failure
            for op in ops:
                if isinstance(op, Put):
                    self._require_lease(op.lease)
            return TxnResult(held, self._commit(self._op_changes(ops)))

    # -- watch --------------------------------------------------------------

    def watch(self, prefix: str, after_revision: int | None = None) -> Watcher:
        """Changes under ``prefix`` after ``after_revision``; live ones from the moment of the call.

        ``ConflictError`` if the history needed has been compacted away.
        """
        checks.check_prefix(prefix)
        checks.check_revision(after_revision, "after_revision")
        self._check_open()
        start = self._revision if after_revision is None else after_revision
        history: builtins.list[WatchEvent] = []
        if start < self._revision:
            compacted = self._compacted_revision()
            if start < compacted:
                raise ConflictError(f"revision {start} has been compacted", compacted=compacted)
            history = self._history(prefix, start)
        return self._hub.subscribe(prefix, max(start, self._revision), history)

    # -- leases -------------------------------------------------------------

    async def grant_lease(self, ttl_s: float) -> int:
        checks.check_ttl(ttl_s)
        async with self._op():
            lease = Lease(self._new_lease_id(), float(ttl_s), self._now() + ttl_s)
            self._save_lease(lease)
            self._leases[lease.id] = lease
        self._lease_added.set()
        self._ensure_sweeper()
        return lease.id

    async def keepalive(self, lease: int) -> None:
        checks.check_lease_id(lease, optional=False)
        async with self._op():
            current = self._leases.get(lease)
            if current is None:
                raise NotFoundError(f"lease {lease} not found or expired")
            renewed = Lease(current.id, current.ttl, self._now() + current.ttl)
            self._save_lease(renewed)
            self._leases[lease] = renewed

    async def revoke(self, lease: int) -> None:
        checks.check_lease_id(lease, optional=False)
        async with self._op():
            if lease in self._leases:
                self._end_lease(lease)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        async with self._lock:
            self._hub.close()
            self._release()

    # -- internals ----------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _op(self) -> AsyncIterator[None]:
        """Run one call: open check, lock, and leases past their expiry ended first."""
        self._check_open()
        if self._leases:
            self._ensure_sweeper()
        async with self._lock:
            self._check_open()
            self._expire_due()
            yield

    def _check_open(self) -> None:
        if self._closed:
            raise VirtfleetError("state store is closed")

    def _commit(self, changes: builtins.list[Change], drop_lease: int | None = None) -> int:
        """Write ``changes`` as the next revision (none: no new revision); return the revision."""
        revision = self._revision + 1 if changes else self._revision
        self._write(Batch(revision, changes, drop_lease))
        self._revision = revision
        if drop_lease is not None:
            self._leases.pop(drop_lease, None)
        self._hub.publish([change.event for change in changes])
        return revision

    def _put_change(
        self, key: str, value: bytes, lease: int | None, old: KeyValue | None
    ) -> Change:
        rev = self._revision + 1
        created = old.create_revision if old else rev
        version = old.version + 1 if old else 1
        kv = KeyValue(key, value, created, rev, version, lease)
        return Change(WatchEvent("put", key, value, rev), kv)

    def _delete_change(self, key: str) -> Change:
        return Change(WatchEvent("delete", key, None, self._revision + 1), None)

    def _op_changes(self, ops: Sequence[Put | Delete]) -> builtins.list[Change]:
        changes = []
        for op in ops:
            old = self._read(op.key)
            if isinstance(op, Put):
                changes.append(self._put_change(op.key, op.value, op.lease, old))
            elif old is not None:
                changes.append(self._delete_change(op.key))
        return changes

    def _require_lease(self, lease: int | None) -> None:
        if lease is not None and lease not in self._leases:
            raise NotFoundError(f"lease {lease} not found or expired")

    def _new_lease_id(self) -> int:
        while True:
            lease_id = secrets.randbits(_LEASE_ID_BITS)
            if lease_id and lease_id not in self._leases:
                return lease_id

    def _end_lease(self, lease: int) -> None:
        """Forget ``lease`` and delete its keys, in one revision."""
        keys = self._lease_keys(lease)
        self._commit([self._delete_change(key) for key in keys], drop_lease=lease)

    def _expire_due(self) -> None:
        now = self._now()
        due = sorted((lease.expiry, lease.id) for lease in self._leases.values())
        for expiry, lease in due:
            if expiry > now:
                break
            self._end_lease(lease)

    def _ensure_sweeper(self) -> None:
        """Start the lease sweeper task if leases exist and it is not running (needs a loop)."""
        if self._closed or not self._leases:
            return
        if self._sweeper is None or self._sweeper.done():
            loop = asyncio.get_running_loop()
            self._sweeper = loop.create_task(self._sweep(), name="state-lease-sweeper")

    async def _sweep(self) -> None:
        """End leases as they expire, so their keys go even if nobody calls the store."""
        while not self._closed:
            await self._sleep_until_due()
            try:
                async with self._lock:
                    if not self._closed:
                        self._expire_due()
            except Exception:
                log.exception("lease sweep failed; retrying in %.0f s", SWEEP_RETRY_S)
                await asyncio.sleep(SWEEP_RETRY_S)

    async def _sleep_until_due(self) -> None:
        """Sleep until the earliest lease expiry, or until a new lease is granted."""
        self._lease_added.clear()
        due = min((lease.expiry for lease in self._leases.values()), default=None)
        timeout = None if due is None else max(0.0, due - self._now())
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._lease_added.wait()


# -- argument checks ---------------------------------------------------------


def _mod_revision(kv: KeyValue | None) -> int:
    return 0 if kv is None else kv.mod_revision


def _compare(key: str, old: KeyValue | None, expect_revision: int | None) -> None:
    if expect_revision is None:
        return
    actual = _mod_revision(old)
    if actual != expect_revision:
        raise RevisionConflictError(
            f"{key!r} is at revision {actual}, expected {expect_revision}",
            key=key,
            expected=expect_revision,
            actual=actual,
        )
