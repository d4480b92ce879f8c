"""The network repository: ``/projects/default/networks/{name}`` -> ``NetworkSpec``
(written by the network service). Must not touch links or processes.
"""

from __future__ import annotations

import builtins

from virtfleet.errors import AlreadyExistsError, NotFoundError, RevisionConflictError
from virtfleet.model.network import NetworkSpec
from virtfleet.state.keys import NETWORKS
from virtfleet.state.store import StateStore


class NetworkRepo:
    def __init__(self, store: StateStore) -> None:
        self.store = store

    async def create(self, spec: NetworkSpec) -> None:
        try:
            await self.store.put(
                NETWORKS + spec.name, spec.model_dump_json().encode(), expect_revision=0
            )
        except RevisionConflictError as err:
            raise AlreadyExistsError(f"network {spec.name!r} already exists") from err

    async def find(self, name: str) -> NetworkSpec | None:
        kv = await self.store.get(NETWORKS + name)
        return NetworkSpec.model_validate_json(kv.value) if kv else None

    async def get(self, name: str) -> NetworkSpec:
        spec = await self.find(name)
        if spec is None:
            raise NotFoundError(f"network {name!r} not found")
        return spec

    async def list(self) -> builtins.list[NetworkSpec]:
        return [NetworkSpec.model_validate_json(kv.value) for kv in await self.store.list(NETWORKS)]

    async def remove(self, name: str) -> None:
        await self.store.delete(NETWORKS + name)
