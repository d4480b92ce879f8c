"""The agent's side of virtual networks: taps and veths around an instance's life,
networks at agent start.

``plug`` makes a VM's taps before QEMU starts (QEMU runs unprivileged and only
opens them); ``joiner`` gives a container's driver the step that moves one veth
per NIC into the container's netns once its init exists; ``unplug`` removes
either once the instance ended; ``reconcile`` makes the host's bridges, dnsmasq
instances and rules match the stored networks this host realises at agent start
(every bridged network; nat/isolated ones it owns), keeping the taps and veths of
instances that still run (their traffic never stops); ``tasks`` supervises dnsmasq
and runs the ``NetworkRealiser`` (networks defined, changed or removed later, and the
statuses and leases this host reports). Must not decide power states (the agent does).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from virtfleet.drivers.base import JoinNetns
from virtfleet.errors import InvalidInputError, NetworkNotOnHostError
from virtfleet.host.netrealise import NetworkRealiser
from virtfleet.model.instance import InstanceSpec, PowerState
from virtfleet.network.base import NetworkHost, TapRequest
from virtfleet.state.networks import NetworkRepo
from virtfleet.state.repos import EventLog, InstanceRecord
from virtfleet.state.store import StateStore

_LIVE = (PowerState.RUNNING, PowerState.PAUSED, PowerState.STARTING, PowerState.STOPPING)


class NicPlumber:
    def __init__(
        self,
        store: StateStore,
        host: NetworkHost | None,
        host_id: str = "",
        events: EventLog | None = None,
    ) -> None:
        self.repo = NetworkRepo(store)
        self.host = host
        self.host_id = host_id
        self.realiser = (
            NetworkRealiser(store, host, host_id, events=events) if host is not None else None
        )
        self._since = 0  # the revision the realiser follows definitions from
        # Instances this agent started with no network NICs: nothing to unplug at their end
        # (listing the host's links is the costly part of a stop).
        self._bare: set[str] = set()

    async def _requests(self, spec: InstanceSpec) -> list[TapRequest]:
        """``spec``'s network NICs with their networks; ``InvalidInputError`` for a missing one."""
        wanted = [(i, nic.network) for i, nic in enumerate(spec.nics) if nic.mode == "network"]
        if wanted and self.host is None:
            raise InvalidInputError("this daemon has no virtual networks for network NICs")
        requests = []
        for index, network in wanted:
            net = await self.repo.find(network or "")
            if net is None:
                raise InvalidInputError(f"NIC {index} of {spec.name}: no network {network!r}")
            if not net.realised_on(self.host_id):  # another host's nat/isolated network
                raise NetworkNotOnHostError(
                    f"NIC {index} of {spec.name}: network {net.name} exists on another host only"
                )
            requests.append(TapRequest(spec.name, index, net))
        return requests

    async def plug(self, spec: InstanceSpec) -> dict[int, str]:
        """Taps for a VM's network NICs (index -> tap name); none made on failure."""
        if spec.kind == "container":
            return {}  # veths need the container's netns: see ``joiner``
        requests = await self._requests(spec)
        self._note(spec.name, requests)
        if not requests or self.host is None:
            return {}
        taps = await self.host.create_taps(requests)
        return {req.nic: tap for req, tap in zip(requests, taps, strict=True)}

    async def joiner(self, spec: InstanceSpec) -> JoinNetns | None:
        """For a container with network NICs: the step its driver runs once the init exists,
        giving the init's netns a veth per NIC (``eth0``, ``eth1``... with the NIC's MAC)."""
        if spec.kind != "container":
            return None
        requests, host = await self._requests(spec), self.host
        self._note(spec.name, requests)
        if not requests or host is None:
            return None

        async def join(pid: int) -> None:
            for ifindex, req in enumerate(requests):
                mac = spec.nics[req.nic].mac
                await host.attach_netns(
                    req.instance, req.nic, req.network, pid, f"eth{ifindex}", mac
                )

        return join

    def _note(self, name: str, requests: list[TapRequest]) -> None:
        if requests:
            self._bare.discard(name)
        else:
            self._bare.add(name)

    async def unplug(self, name: str) -> None:
        """Remove the taps or veths of ``name``; idempotent. Skips the host-wide search for
        an instance this agent started without network NICs."""
        if name in self._bare:
            self._bare.discard(name)
            return
        if self.host is not None:
            await self.host.remove_taps(name)

    async def reconcile(self, records: Sequence[InstanceRecord]) -> None:
        if self.host is None:
            return
        running = {r.name for r in records if r.status.power in _LIVE}
        if self.realiser is None:
            return
        since = await self.repo.store.revision()
        mine = [n for n in await self.repo.list() if n.realised_on(self.host_id)]
        await self.host.reconcile(mine, running)
        await self.realiser.initial()
        self._since = since

    def tasks(self) -> list[asyncio.Task[None]]:
        if self.host is None or self.realiser is None:
            return []
        return [
            asyncio.create_task(self.host.supervise(), name="agent-dnsmasq"),
            asyncio.create_task(self.realiser.follow(self._since), name="agent-networks"),
            asyncio.create_task(self.realiser.report_leases(), name="agent-leases"),
        ]
