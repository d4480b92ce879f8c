"""The network repository: ``/projects/default/networks/{name}`` -> ``NetworkSpec``
(written by the network service), and each host's realisation of each network,
``/projects/default/network-hosts/{name}/{host}`` -> ``NetworkHostStatus`` (written by
that host: its agent, or its network service when it made the network itself).
Must not touch links or processes.
"""

from __future__ import annotations

import builtins

from virtfleet.errors import AlreadyExistsError, NotFoundError, RevisionConflictError
from virtfleet.model.network import NetworkHostStatus, NetworkSpec
from virtfleet.state.keys import (
    NETWORK_HOSTS,
    NETWORKS,
    network_host_key,
    network_hosts_prefix,
)
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
        """The network and every host's status of it."""
        await self.store.delete(NETWORKS + name)
        await self.store.delete_prefix(network_hosts_prefix(name))

    # -- per-host realisation ------------------------------------------------------------

    async def report(self, name: str, status: NetworkHostStatus) -> None:
        await self.store.put(network_host_key(name, status.host), status.model_dump_json().encode())

    async def unreport(self, name: str, host_id: str) -> None:
        await self.store.delete(network_host_key(name, host_id))

    async def statuses(self, name: str) -> builtins.list[NetworkHostStatus]:
        """Every host's status of network ``name`` (by host id)."""
        found = await self.store.list(network_hosts_prefix(name))
        return [NetworkHostStatus.model_validate_json(kv.value) for kv in found]

    async def all_statuses(self) -> dict[str, builtins.list[NetworkHostStatus]]:
        """Every network's host statuses, by network name (one range read)."""
        out: dict[str, builtins.list[NetworkHostStatus]] = {}
        for kv in await self.store.list(NETWORK_HOSTS):
            name = kv.key[len(NETWORK_HOSTS) :].split("/", 1)[0]
            out.setdefault(name, []).append(NetworkHostStatus.model_validate_json(kv.value))
        return out
