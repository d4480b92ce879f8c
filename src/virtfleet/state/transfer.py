"""Copying a whole store into another (``cluster init``: the SQLite data into etcd).

Owns ``copy_store``: one consistent listing of the source (every key at one revision),
written to an empty target in transactions of at most ``BATCH`` puts (etcd refuses a
transaction over its ``--max-txn-ops``, 128 by default). Keys bound to a lease (host
liveness, sessions, leadership) are not copied: they belong to the running daemon,
which makes them again on the new store. Must not decide when to copy.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from virtfleet.errors import ConflictError
from virtfleet.state.keys import MACS, instance_key, instance_name_of, instance_prefix
from virtfleet.state.store import Compare, Put, StateStore

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


async def import_keys(
    source: StateStore,
    target: StateStore,
    owned: list[str],
    shared: list[str],
    renamed: Mapping[str, str] | None = None,
) -> int:
    """Bring a joining host's records into the cluster: every key under the ``owned``
    prefixes (its instances: their names were checked free), and each key under the
    ``shared`` prefixes the cluster lacks (images, networks, MAC reservations: the
    cluster's own stay). Lease-bound keys stay behind. ``renamed``: instances that come
    in under another name (their keys, spec name and MAC reservations follow). The
    number of keys written."""
    moved = dict(renamed or {})
    written = 0
    for prefix in owned:
        kvs = [kv for kv in await source.list(prefix) if kv.lease is None]
        puts = [Put(*rename_key(kv.key, kv.value, moved)) for kv in kvs]
        for start in range(0, len(puts), BATCH):
            await target.txn([], puts[start : start + BATCH])
        written += len(puts)
    for prefix in shared:
        for kv in await source.list(prefix):
            key, value = rename_key(kv.key, kv.value, moved)
            if kv.lease is None and await target.txn([Compare(key, 0)], [Put(key, value)]):
                written += 1
    return written


def rename_key(key: str, value: bytes, renamed: Mapping[str, str]) -> tuple[str, bytes]:
    """``key`` and ``value`` as they are once the instances ``renamed`` (old -> new) carry
    their new names: an instance's keys move, its spec names it, a MAC claim names it."""
    name = instance_name_of(key)
    if name is not None and name in renamed:
        new, part = renamed[name], key[len(instance_prefix(name)) :]
        if part == "spec":
            spec = json.loads(value)
            value = json.dumps({**spec, "name": new}).encode()
        return instance_key(new, part), value
    if key.startswith(MACS) and value.decode(errors="replace") in renamed:
        return key, renamed[value.decode()].encode()
    return key, value
