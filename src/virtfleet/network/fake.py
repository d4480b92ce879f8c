"""``FakeNetworkManager``: the network manager's contract in memory, for the fake driver.

Used when the daemon runs with the fake driver (functional tests), so no test
process ever changes the links or rules of the machine it runs on. Keeps the
same rules as the real one where they are visible through the API: a name that
is a "host interface" (``HOST_INTERFACES``) conflicts, a network with taps is
in use; a bridged network needs its parent among ``bridges`` (a test gives one host
other bridges than another); ``leased`` holds the leases a test hands out.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable

from virtfleet.errors import ConflictError, InUseError
from virtfleet.model.network import Lease, NetworkMode, NetworkSpec, NetworkState
from virtfleet.network.base import TapRequest
from virtfleet.network.links import tap_name

HOST_INTERFACES = ("lo", "eth0", "br0")


class FakeNetworkManager:
    def __init__(self, bridges: tuple[str, ...] = ("br0",)) -> None:
        self.networks: dict[str, NetworkSpec] = {}
        self.taps: dict[str, tuple[str, str]] = {}  # tap -> (instance, network)
        self.bridges = bridges  # the host's own bridges (parents of bridged networks)
        self.leased: dict[str, builtins.list[Lease]] = {}  # network -> its dnsmasq's leases
        self.adopted: builtins.list[str] = []  # the set the last ``adopt`` named

    async def check(self, spec: NetworkSpec) -> None:
        if spec.name in HOST_INTERFACES:
            raise ConflictError(f"network name {spec.name!r} is already a host interface")
        if spec.mode is NetworkMode.BRIDGED and spec.parent not in self.bridges:
            raise ConflictError(f"parent {spec.parent!r} is not a bridge on this host")

    async def create(self, spec: NetworkSpec, others: Iterable[NetworkSpec]) -> None:
        await self.check(spec)
        self.networks[spec.name] = spec

    async def remove(self, spec: NetworkSpec, others: Iterable[NetworkSpec]) -> None:
        users = sorted({i for i, n in self.taps.values() if n == spec.name})
        if users:
            raise InUseError(f"network {spec.name} is in use by {', '.join(users)}")
        self.networks.pop(spec.name, None)

    async def state(self, spec: NetworkSpec) -> NetworkState:
        users = sorted({i for i, n in self.taps.values() if n == spec.name})
        present = spec.name in self.networks
        return NetworkState(bridge=spec.bridge, present=present, users=users)

    def leases(self, network: str) -> builtins.list[Lease]:
        return list(self.leased.get(network, [])) if network in self.networks else []

    async def create_taps(self, requests: Iterable[TapRequest]) -> builtins.list[str]:
        made = []
        for req in requests:
            name = tap_name(req.instance, req.nic)
            self.taps[name] = (req.instance, req.network.name)
            made.append(name)
        return made

    async def remove_taps(self, instance: str) -> None:
        for name in [t for t, (i, _) in self.taps.items() if i == instance]:
            del self.taps[name]

    async def reconcile(self, networks: Iterable[NetworkSpec], running: set[str]) -> None:
        # Like the real one: a network that cannot be made is skipped.
        self.networks = {}
        for spec in networks:
            try:
                await self.check(spec)
            except ConflictError:
                continue
            self.networks[spec.name] = spec
        self.taps = {t: v for t, v in self.taps.items() if v[0] in running}

    async def adopt(self, networks: Iterable[NetworkSpec]) -> None:
        self.adopted = [n.name for n in networks]  # rules are not modelled: what was asked

    async def supervise(self, interval_s: float = 5.0) -> None:
        return None

    async def attach_netns(
        self,
        instance: str,
        nic: int,
        network: NetworkSpec,
        netns_pid: int,
        ifname: str = "eth0",
        mac: str | None = None,
    ) -> str:
        name = tap_name(instance, nic)
        self.taps[name] = (instance, network.name)
        return name

    async def detach_netns(self, instance: str, nic: int) -> None:
        self.taps.pop(tap_name(instance, nic), None)
