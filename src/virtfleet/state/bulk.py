"""Writes too big for one transaction, split into transactions every store accepts.

etcd refuses a transaction of more than ``MAX_TXN_OPS`` operations (its
``--max-txn-ops``, 128 by default), so bulk deletes (pruning audit entries, events,
finished operations) go in batches of that size, each batch one revision. Callers must
not need the batches to be atomic together: they only drop old data.
"""

from __future__ import annotations

from collections.abc import Sequence

from virtfleet.state.store import Delete, StateStore

MAX_TXN_OPS = 128  # etcd's default --max-txn-ops


async def delete_keys(store: StateStore, keys: Sequence[str]) -> int:
    """Delete ``keys`` in transactions of at most ``MAX_TXN_OPS``; return how many."""
    for start in range(0, len(keys), MAX_TXN_OPS):
        await store.txn([], [Delete(key) for key in keys[start : start + MAX_TXN_OPS]])
    return len(keys)
