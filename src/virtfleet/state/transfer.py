"""Copying a whole store into another (``cluster init``: the SQLite data into etcd).

Owns ``copy_store``: one consistent listing of the source (every key at one revision),
written to an empty target in transactions of at most ``BATCH`` puts (etcd refuses a
transaction over its ``--max-txn-ops``, 128 by default). Keys bound to a lease (host
liveness, sessions, leadership) are not copied: they belong to the running daemon,
which makes them again on the new store. Must not decide when to copy.
"""

from __future__ import annotations

from virtfleet.errors import ConflictError
from virtfleet.state.store import Put, StateStore

BATCH = 100


async def copy_store(source: StateStore, target: StateStore, batch: int = BATCH) -> int:
    """Copy every lease-free key of ``source`` into ``target`` (which must be empty);
    the number of keys copied. ``ConflictError`` if the target holds keys already."""
    if await target.count(""):
        raise ConflictError("the target store is not empty: refusing to copy over its keys")
    listing = await source.range("")
    puts = [Put(kv.key, kv.value) for kv in listing.kvs if kv.lease is None]
    for start in range(0, len(puts), batch):
        await target.txn([], puts[start : start + batch])
    copied = await target.count("")
    if copied != len(puts):
        raise ConflictError(f"copied {copied} keys of {len(puts)}: the target changed meanwhile")
    return copied
