"""Storage pools: the port (``base``), its back-ends (``files``: dir, shared-dir;
``fake``) and the shared-directory checks (``probe``). Importing the package registers
every back-end."""

from __future__ import annotations

from virtfleet.storage.pools import files
from virtfleet.storage.pools.base import (
    PoolContext,
    Space,
    StoragePool,
    VolumeInfo,
    open_pool,
    register,
    types,
    volume_name,
)
from virtfleet.storage.pools.lookup import PoolLookup

__all__ = [
    "PoolContext",
    "PoolLookup",
    "Space",
    "StoragePool",
    "VolumeInfo",
    "files",
    "open_pool",
    "register",
    "types",
    "volume_name",
]
