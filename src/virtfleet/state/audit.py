"""The append-only audit log under ``/audit/`` (keys: see ``state.repos``), kept to a bound.

Owns the audit keys ``/audit/{time_ns:020d}-{random}`` (the entry's time): they
sort by time, never collide (a create-only put) and let a time range be cut from
the keys alone. Entries are never changed; the oldest are pruned beyond
``max_entries``. Must not decide what goes into an entry (the API's audit
middleware does).
"""

from __future__ import annotations

import builtins
import secrets
from datetime import datetime

from virtfleet.errors import RevisionConflictError
from virtfleet.model.audit import AuditEntry, AuditQuery
from virtfleet.state.repos import AUDIT
from virtfleet.state.store import Delete, StateStore

MAX_ENTRIES = 100_000
PRUNE_EVERY = 1000  # appends between two prunes (and the first append after start)


def _time_key(at: datetime) -> str:
    return f"{AUDIT}{int(at.timestamp() * 1e9):020d}"


class AuditLog:
    def __init__(self, store: StateStore, max_entries: int = MAX_ENTRIES) -> None:
        self.store = store
        self.max_entries = max_entries
        self._appended = 0

    async def append(self, entry: AuditEntry) -> AuditEntry:
        """Store ``entry`` under a new key; the entry with its ``id``. Never overwrites."""
        entry = await self._put_new(entry)
        self._appended += 1
        if self._appended % PRUNE_EVERY == 1:
            await self.prune()
        return entry

    async def _put_new(self, entry: AuditEntry) -> AuditEntry:
        for _ in range(3):
            entry_id = f"{_time_key(entry.time)[len(AUDIT) :]}-{secrets.token_hex(4)}"
            entry = entry.model_copy(update={"id": entry_id})
            value = entry.model_dump_json().encode()
            try:
                await self.store.put(AUDIT + entry_id, value, expect_revision=0)
            except RevisionConflictError:  # same time and random part: draw again
                continue
            return entry
        raise RevisionConflictError("could not find a free audit key")

    async def prune(self) -> int:
        """Delete the oldest entries beyond ``max_entries`` in one revision; how many."""
        kvs = await self.store.list(AUDIT)
        extra = kvs[: max(0, len(kvs) - self.max_entries)]
        if extra:
            await self.store.txn([], [Delete(kv.key) for kv in extra])
        return len(extra)

    async def query(self, query: AuditQuery) -> builtins.list[AuditEntry]:
        """Entries matching ``query``, newest first, at most ``query.limit``."""
        since = _time_key(query.since) if query.since is not None else None
        until = _time_key(query.until) if query.until is not None else None
        found: builtins.list[AuditEntry] = []
        for kv in reversed(await self.store.list(AUDIT)):
            if until is not None and kv.key >= until:
                continue
            if since is not None and kv.key < since:
                break  # keys sort by time: everything further is older
            entry = AuditEntry.model_validate_json(kv.value)
            if query.matches(entry):
                found.append(entry)
                if len(found) >= query.limit:
                    break
        return found
