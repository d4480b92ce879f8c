"""The ``StateStore`` protocol: a revisioned key-value store with etcd semantics.

One data model serves the embedded (SQLite) and the clustered (etcd) mode.
``MemoryStore`` defines the reference semantics; tests/contract/test_store.py
runs one suite against every implementation. This module holds only the
protocol and its value types: no I/O.

Semantics (as etcd v3):
- every successful mutation bumps one global ``revision`` (starting at 1 for the
  first write; an empty store is at revision 0);
- a key carries ``create_revision``, ``mod_revision`` and ``version`` (writes
  since creation); deleting and re-creating resets ``version`` to 1;
- ``put(expect_revision=r)`` is compare-and-swap on the key's ``mod_revision``
  (``r == 0`` means "must not exist"); a miss raises ``RevisionConflictError``;
- ``txn`` returns a ``TxnResult``: whether its compares held and the revision it
  committed (the store's current revision if it wrote nothing), so a caller never
  asks ``revision()`` afterwards (another writer may have committed in between);
- ``range`` is ``list`` with the revision the listing was read at (a watch from that
  revision misses nothing and repeats nothing of what the listing showed);
- ``watch(prefix, after_revision)`` yields every change with a revision greater
  than ``after_revision`` (history first, then live) in revision order;
- a key put with a lease is deleted (with a delete watch event) when the lease
  expires or is revoked.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol


@dataclass(frozen=True)
class KeyValue:
    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int | None = None


@dataclass(frozen=True)
class WatchEvent:
    type: Literal["put", "delete"]
    key: str
    value: bytes | None  # None for deletes
    revision: int


@dataclass(frozen=True)
class TxnResult:
    """What a transaction did: ``succeeded`` (its compares held) at ``revision``.

    Truthy exactly when the compares held, so ``if await store.txn(...)`` reads as before.
    """

    succeeded: bool
    revision: int  # the revision it committed; the current one if it wrote nothing

    def __bool__(self) -> bool:
        return self.succeeded


@dataclass(frozen=True)
class Range:
    """A listing and the store revision it was read at."""

    kvs: list[KeyValue]
    revision: int


@dataclass(frozen=True)
class Compare:
    """Transaction guard: the key's ``mod_revision`` equals ``mod_revision`` (0 = absent)."""

    key: str
    mod_revision: int


@dataclass(frozen=True)
class Put:
    key: str
    value: bytes
    lease: int | None = None


@dataclass(frozen=True)
class Delete:
    key: str


class StateStore(Protocol):
    async def get(self, key: str) -> KeyValue | None: ...

    async def put(
        self,
        key: str,
        value: bytes,
        *,
        expect_revision: int | None = None,
        lease: int | None = None,
    ) -> int:
        """Write ``value``; return the new store revision."""
        ...

    async def delete(self, key: str, *, expect_revision: int | None = None) -> bool:
        """Delete ``key``; return whether it existed. Missing keys are not an error
        unless ``expect_revision`` is given and does not match (then conflict)."""
        ...

    async def delete_prefix(self, prefix: str) -> int:
        """Delete every key under ``prefix`` in one revision; return how many."""
        ...

    async def list(
        self,
        prefix: str,
        *,
        end: str | None = None,
        limit: int | None = None,
        descending: bool = False,
    ) -> list[KeyValue]:
        """Live keys starting with ``prefix`` (and below ``end``, if given), sorted by key
        (``descending``: newest key first), at most ``limit`` of them (etcd's range with
        ``range_end``, ``limit`` and ``sort_order``): a bounded page of a big prefix."""
        ...

    async def range(
        self,
        prefix: str,
        *,
        end: str | None = None,
        limit: int | None = None,
        descending: bool = False,
    ) -> Range:
        """``list`` and the revision it read (etcd's range response header)."""
        ...

    async def count(self, prefix: str) -> int:
        """How many live keys start with ``prefix`` (etcd's ``count_only``)."""
        ...

    async def txn(
        self,
        compares: Sequence[Compare],
        success: Sequence[Put | Delete],
        failure: Sequence[Put | Delete] = (),
    ) -> TxnResult:
        """Apply ``success`` atomically (one revision) if every compare holds, else ``failure``.
        Return whether the compares held and the revision committed."""
        ...

    async def revision(self) -> int: ...

    def watch(self, prefix: str, after_revision: int | None = None) -> AsyncIterator[WatchEvent]:
        """Changes under ``prefix`` with revision > ``after_revision`` (None = from now)."""
        ...

    async def grant_lease(self, ttl_s: float) -> int: ...

    async def keepalive(self, lease: int) -> None:
        """Renew ``lease`` for its TTL; ``NotFoundError`` if it expired or was revoked."""
        ...

    async def revoke(self, lease: int) -> None:
        """End ``lease`` now, deleting its keys. Unknown leases are ignored."""
        ...

    async def close(self) -> None: ...
