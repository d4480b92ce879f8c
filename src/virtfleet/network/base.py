"""The ``NetworkHost`` protocol: what the service and the agent need of a host's networking.

``manager.NetworkManager`` (real links, dnsmasq, nftables) and
``fake.FakeNetworkManager`` (memory) implement it.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from virtfleet.model.network import Lease, NetworkSpec, NetworkState


@dataclass(frozen=True)
class TapRequest:
    instance: str
    nic: int
    network: NetworkSpec


class NetworkHost(Protocol):
    async def check(self, spec: NetworkSpec) -> None:
        """Raise ``ConflictError`` if ``spec`` clashes with the host (names, addresses)."""
        ...

    async def create(self, spec: NetworkSpec, others: Iterable[NetworkSpec]) -> None:
        """Make the network (all or nothing)."""
        ...

    async def remove(self, spec: NetworkSpec, others: Iterable[NetworkSpec]) -> None:
        """Remove it (idempotent); ``InUseError`` while NICs are attached."""
        ...

    async def state(self, spec: NetworkSpec) -> NetworkState: ...

    def leases(self, network: str) -> builtins.list[Lease]: ...

    async def create_taps(self, requests: Iterable[TapRequest]) -> builtins.list[str]:
        """One tap per request, on its network's bridge; all or none."""
        ...

    async def remove_taps(self, instance: str) -> None:
        """Every tap and veth of ``instance``; idempotent."""
        ...

    async def reconcile(self, networks: Iterable[NetworkSpec], running: set[str]) -> None: ...

    async def adopt(self, networks: Iterable[NetworkSpec]) -> None:
        """Take ``networks`` (made already) as this host's whole set and rewrite the rules
        for exactly them; no link, dnsmasq or tap is touched."""
        ...

    async def supervise(self, interval_s: float = 5.0) -> None: ...

    async def attach_netns(
        self,
        instance: str,
        nic: int,
        network: NetworkSpec,
        netns_pid: int,
        ifname: str = "eth0",
        mac: str | None = None,
    ) -> str:
        """Join the network namespace of ``netns_pid`` (a container) to ``network`` with a
        veth pair (``ifname`` inside gets ``mac``); the host end's name."""
        ...

    async def detach_netns(self, instance: str, nic: int) -> None: ...
