"""The agent's side of virtual networks: taps around a VM's life, networks at agent start.

``plug`` makes a VM's taps before QEMU starts (QEMU runs unprivileged and only
opens them), ``unplug`` removes them once QEMU ended; ``reconcile`` makes the
host's bridges, dnsmasq instances and rules match the stored networks at agent
start, keeping the taps of VMs that still run (their traffic never stops), and
``tasks`` supervises dnsmasq. Must not decide power states (the agent does).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from virtfleet.errors import InvalidInputError
from virtfleet.model.instance import InstanceSpec, PowerState
from virtfleet.network.base import NetworkHost, TapRequest
from virtfleet.state.networks import NetworkRepo
from virtfleet.state.repos import InstanceRecord
from virtfleet.state.store import StateStore

_LIVE = (PowerState.RUNNING, PowerState.PAUSED, PowerState.STARTING, PowerState.STOPPING)


class NicPlumber:
    def __init__(self, store: StateStore, host: NetworkHost | None) -> None:
        self.repo = NetworkRepo(store)
        self.host = host

    async def plug(self, spec: InstanceSpec) -> dict[int, str]:
        """Taps for ``spec``'s network NICs (index -> tap name); none made on failure."""
        wanted = [(i, nic.network) for i, nic in enumerate(spec.nics) if nic.mode == "network"]
        if not wanted:
            return {}
        if self.host is None:
            raise InvalidInputError("this daemon has no virtual networks for network NICs")
        requests = []
        for index, network in wanted:
            net = await self.repo.find(network or "")
            if net is None:
                raise InvalidInputError(f"NIC {index} of {spec.name}: no network {network!r}")
            requests.append(TapRequest(spec.name, index, net))
        taps = await self.host.create_taps(requests)
        return {req.nic: tap for req, tap in zip(requests, taps, strict=True)}

    async def unplug(self, name: str) -> None:
        if self.host is not None:
            await self.host.remove_taps(name)

    async def reconcile(self, records: Sequence[InstanceRecord]) -> None:
        if self.host is None:
            return
        running = {r.name for r in records if r.status.power in _LIVE}
        await self.host.reconcile(await self.repo.list(), running)

    def tasks(self) -> list[asyncio.Task[None]]:
        if self.host is None:
            return []
        return [asyncio.create_task(self.host.supervise(), name="agent-dnsmasq")]
