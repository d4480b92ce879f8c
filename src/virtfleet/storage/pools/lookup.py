"""Opening a pool by name from the store, for the host's disk code.

Owns reading ``/storage-pools/{name}`` and opening its back-end with this host's
context. Must not create or verify pools (service/pools.py does).
"""

from __future__ import annotations

from virtfleet.errors import NotFoundError
from virtfleet.model.pools import PoolRecord
from virtfleet.state import keys
from virtfleet.state.store import StateStore
from virtfleet.storage.pools.base import PoolContext, StoragePool, open_pool


class PoolLookup:
    def __init__(self, store: StateStore, ctx: PoolContext) -> None:
        self._store = store
        self.ctx = ctx

    async def open(self, name: str) -> StoragePool:
        """Pool ``name`` as this host sees it; ``NotFoundError`` if there is none."""
        kv = await self._store.get(keys.pool_key(name))
        if kv is None:
            raise NotFoundError(f"storage pool {name!r} not found")
        return open_pool(PoolRecord.model_validate_json(kv.value), self.ctx)
