"""``MemoryStore``: the in-process ``StateStore`` that defines the reference semantics.

Owns nothing but plain Python containers — the live keys, a bounded change
history for watches — and loses everything on ``close``. The semantics
themselves (revisions, compare-and-swap, transactions, leases, watches) live in
``CoreStore`` and are shared with ``SQLiteStore``; tests/contract/test_store.py
pins them for every implementation.
"""

from __future__ import annotations

import builtins
from collections import deque

from virtfleet.state._core import DEFAULT_HISTORY, Batch, CoreStore, Lease, Page
from virtfleet.state.store import KeyValue, WatchEvent


class MemoryStore(CoreStore):
    """Keys and history in dicts; keeps the last ``history`` changes for watches."""

    def __init__(self, *, history: int = DEFAULT_HISTORY) -> None:
        self._kvs: dict[str, KeyValue] = {}
        self._log: deque[WatchEvent] = deque()
        self._compacted = 0
        super().__init__(history=history, revision=0, leases=())

    def _read(self, key: str) -> KeyValue | None:
        return self._kvs.get(key)

    def _scan(self, prefix: str, page: Page | None = None) -> builtins.list[KeyValue]:
        keys = sorted(k for k in self._kvs if k.startswith(prefix))
        if page is not None:
            keys = [k for k in keys if page.end is None or k < page.end]
            keys = (keys[::-1] if page.descending else keys)[: page.limit]
        return [self._kvs[key] for key in keys]

    def _count(self, prefix: str) -> int:
        return sum(1 for k in self._kvs if k.startswith(prefix))

    def _lease_keys(self, lease: int) -> builtins.list[str]:
        return sorted(key for key, kv in self._kvs.items() if kv.lease == lease)

    def _write(self, batch: Batch) -> None:
        for event, kv in batch.changes:
            if kv is None:
                self._kvs.pop(event.key, None)
            else:
                self._kvs[event.key] = kv
            self._log.append(event)
        self._trim_log()

    def _trim_log(self) -> None:
        """Drop the oldest whole revisions until at most ``history`` changes remain."""
        while len(self._log) > self._history_limit:
            oldest = self._log[0].revision
            while self._log and self._log[0].revision == oldest:
                self._log.popleft()
            self._compacted = oldest

    def _save_lease(self, lease: Lease) -> None:
        """Nothing to persist: ``CoreStore`` already holds the lease table."""

    def _history(self, prefix: str, after: int) -> builtins.list[WatchEvent]:
        return [e for e in self._log if e.revision > after and e.key.startswith(prefix)]

    def _compacted_revision(self) -> int:
        return self._compacted

    def _release(self) -> None:
        self._kvs.clear()
        self._log.clear()
