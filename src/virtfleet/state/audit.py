"""The append-only audit log under ``/audit/`` and ``/audit-anonymous/``, each kept to a bound.

Owns the audit keys ``{bucket}{time_ns:020d}-{random}`` (the entry's time): they
sort by time, never collide (a create-only put) and let a time range be cut from
the keys alone. Requests without valid credentials go to their own, smaller
bucket, so an anonymous flood can only push out other anonymous entries, never
what users and the local root did. Entries are never changed; the oldest of a
bucket are pruned beyond its bound. Pruning and queries read bounded pages (the
store's ranged ``list``/``count``) and yield to the event loop between them: the
whole log is never loaded at once. Must not decide what goes into an entry (the
API's audit middleware does).
"""

from __future__ import annotations

import asyncio
import builtins
import heapq
import secrets
from collections.abc import AsyncIterator
from datetime import datetime

from virtfleet.errors import RevisionConflictError
from virtfleet.model.audit import AuditEntry, AuditQuery
from virtfleet.model.auth import ANONYMOUS
from virtfleet.state.bulk import delete_keys
from virtfleet.state.keys import ANONYMOUS_AUDIT, AUDIT
from virtfleet.state.store import StateStore

MAX_ENTRIES = 100_000
MAX_ANONYMOUS = 10_000
PRUNE_EVERY = 1000  # appends to a bucket between two prunes (and the first after start)
PAGE = 256  # entries read per store call
PRUNE_BATCH = 2000  # most entries one prune deletes (the next prune goes on)


def _time_key(bucket: str, at: datetime) -> str:
    return f"{bucket}{int(at.timestamp() * 1e9):020d}"


class AuditLog:
    def __init__(
        self,
        store: StateStore,
        max_entries: int = MAX_ENTRIES,
        max_anonymous: int = MAX_ANONYMOUS,
    ) -> None:
        self.store = store
        self.bounds = {AUDIT: max_entries, ANONYMOUS_AUDIT: max_anonymous}
        self._appended = {AUDIT: 0, ANONYMOUS_AUDIT: 0}

    async def append(self, entry: AuditEntry) -> AuditEntry:
        """Store ``entry`` under a new key in its bucket; the entry with its ``id``."""
        bucket = ANONYMOUS_AUDIT if entry.actor == ANONYMOUS else AUDIT
        entry = await self._put_new(bucket, entry)
        self._appended[bucket] += 1
        if self._appended[bucket] % PRUNE_EVERY == 1 or PRUNE_EVERY == 1:
            await self.prune(bucket)
        return entry

    async def _put_new(self, bucket: str, entry: AuditEntry) -> AuditEntry:
        for _ in range(3):
            entry_id = f"{_time_key(bucket, entry.time)[len(bucket) :]}-{secrets.token_hex(4)}"
            entry = entry.model_copy(update={"id": entry_id})
            value = entry.model_dump_json().encode()
            try:
                await self.store.put(bucket + entry_id, value, expect_revision=0)
            except RevisionConflictError:  # same time and random part: draw again
                continue
            return entry
        raise RevisionConflictError("could not find a free audit key")

    async def prune(self, bucket: str | None = None) -> int:
        """Delete the oldest entries beyond the bound of ``bucket`` (default: both), at
        most ``PRUNE_BATCH`` per bucket, in transactions etcd accepts; how many."""
        pruned = 0
        for each in [bucket] if bucket else list(self.bounds):
            extra = await self.store.count(each) - self.bounds[each]
            if extra > 0:
                oldest = await self.store.list(each, limit=min(extra, PRUNE_BATCH))
                pruned += await delete_keys(self.store, [kv.key for kv in oldest])
        return pruned

    async def query(self, query: AuditQuery) -> builtins.list[AuditEntry]:
        """Entries matching ``query``, newest first, at most ``query.limit``."""
        buckets = [AUDIT, ANONYMOUS_AUDIT]
        if query.actor is not None:
            buckets = [ANONYMOUS_AUDIT if query.actor == ANONYMOUS else AUDIT]
        since = query.since
        streams = [self._newest_first(b, query.until) for b in buckets]
        found: builtins.list[AuditEntry] = []
        async for entry in _merged(streams):
            if since is not None and entry.time < since:
                break  # keys sort by time: everything further is older
            if query.matches(entry):
                found.append(entry)
                if len(found) >= query.limit:
                    break
        return found

    async def _newest_first(self, bucket: str, until: datetime | None) -> AsyncIterator[AuditEntry]:
        """The entries of ``bucket`` older than ``until``, newest first, a page at a time."""
        end = _time_key(bucket, until) if until is not None else None
        while True:
            page = await self.store.list(bucket, end=end, limit=PAGE, descending=True)
            for kv in page:
                yield AuditEntry.model_validate_json(kv.value)
            if len(page) < PAGE:
                return
            end = page[-1].key
            await asyncio.sleep(0)  # a long scan must not hold the event loop


async def _merged(streams: builtins.list[AsyncIterator[AuditEntry]]) -> AsyncIterator[AuditEntry]:
    """Entries of several newest-first streams as one newest-first stream (by id)."""
    heads: builtins.list[tuple[str, int, AuditEntry]] = []
    for n, stream in enumerate(streams):
        first = await anext(stream, None)
        if first is not None:
            heads.append((_neg(first.id), n, first))
    heapq.heapify(heads)
    while heads:
        _, n, entry = heapq.heappop(heads)
        yield entry
        following = await anext(streams[n], None)
        if following is not None:
            heapq.heappush(heads, (_neg(following.id), n, following))


def _neg(entry_id: str) -> str:
    """A key that sorts ids newest first (ids are fixed-width digits, '-', hex)."""
    return entry_id.translate(_INVERT)


_INVERT = str.maketrans("0123456789abcdef", "fedcba9876543210")
