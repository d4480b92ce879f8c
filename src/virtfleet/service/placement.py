"""Which host a new instance goes to: the one named, else the least-allocated that fits.

Owns ``choose_host`` (pure) and ``Placement`` (reads the hosts and the instances from the
store). A named host (``--host``, id or name) must be a member (``UnknownHostError`` 400
naming the members) and online (``ConflictError``). Without one, the candidates are the
online hosts whose free room (their capacity limits minus what their instances hold,
as capacity admission counts it) fits the request, and for a container an OCI runtime;
the least allocated one wins (memory share, then vCPU share, then instance count; a
tie goes to this host, which has the image and needs no forwarding, then by name). A
host is a candidate only if it realises every network the NICs use (its agent reported
it made them; a nat/isolated network only on its owning host). No candidate: this
host, whose admission (or NIC check) then names the shortfall. The scheduler issue
replaces this with real placement (reservations written with the ownership).
Must not write anything.
"""

from __future__ import annotations

from dataclasses import dataclass

from virtfleet.errors import ConflictError, NotFoundError, UnknownHostError
from virtfleet.model.host import HostRecord, HostState
from virtfleet.model.instance import InstanceSpec
from virtfleet.service.allocations import Allocations, counts
from virtfleet.state.hosts import HostRepo
from virtfleet.state.networks import NetworkRepo
from virtfleet.state.repos import InstanceRecord, InstanceRepo
from virtfleet.state.store import StateStore


@dataclass(frozen=True)
class Load:
    """What one host's instances hold now."""

    memory_mib: int = 0
    vcpus: int = 0
    instances: int = 0


def loads(records: list[InstanceRecord]) -> dict[str, Load]:
    """Allocation per owning host id (instances that run or are asked to)."""
    found: dict[str, Load] = {}
    for rec in records:
        if rec.owner is None or not counts(rec):
            continue
        was = found.get(rec.owner.host, Load())
        found[rec.owner.host] = Load(
            was.memory_mib + rec.spec.memory_mib, was.vcpus + rec.spec.vcpus, was.instances + 1
        )
    return found


def _fits(host: HostRecord, load: Load, spec: InstanceSpec) -> bool:
    cap = host.capacity
    if spec.kind == "container" and not host.oci_runtime:
        return False
    if not cap.memory_limit_mib:
        return True  # capacity unknown: nothing honest to compare with
    room_memory = cap.memory_limit_mib - load.memory_mib
    return room_memory >= spec.memory_mib and cap.vcpus_limit - load.vcpus >= spec.vcpus


def _share(host: HostRecord, load: Load, here: str) -> tuple[float, float, int, bool, str]:
    cap = host.capacity
    memory = load.memory_mib / cap.memory_limit_mib if cap.memory_limit_mib else 0.0
    vcpus = load.vcpus / cap.vcpus_limit if cap.vcpus_limit else 0.0
    return memory, vcpus, load.instances, host.id != here, host.name


def choose_host(
    spec: InstanceSpec,
    hosts: list[HostRecord],
    found: dict[str, Load],
    here: str,
    allowed: set[str] | None = None,
) -> str:
    """The id of the least-allocated online host that fits ``spec`` (and is in ``allowed``,
    when given: the hosts with its networks), else ``here``."""
    fitting = [
        h
        for h in hosts
        if h.alive
        and h.state is HostState.ONLINE
        and (allowed is None or h.id in allowed)
        and _fits(h, found.get(h.id, Load()), spec)
    ]
    if not fitting:
        return here
    return min(fitting, key=lambda h: _share(h, found.get(h.id, Load()), here)).id


class Placement:
    def __init__(self, store: StateStore, here: str, tally: Allocations | None = None) -> None:
        self.hosts = HostRepo(store)
        self.instances = InstanceRepo(store)
        self.networks = NetworkRepo(store)
        self.here = here
        self.tally = tally  # the capacity tally's records, when it follows the store

    async def records(self) -> list[InstanceRecord]:
        if self.tally is not None and await self.tally.current():
            return self.tally.records()  # no listing of every instance per create
        return await self.instances.list(shared=True)

    async def named(self, host: str) -> str:
        """The id of member ``host`` (id or name); 400 if unknown, 409 if not online."""
        try:
            found = await self.hosts.get(host)
        except NotFoundError as err:
            names = ", ".join(h.name for h in await self.hosts.list()) or "none"
            raise UnknownHostError(f"unknown host {host!r}; the members are: {names}") from err
        if not found.alive or found.state is not HostState.ONLINE:
            raise ConflictError(f"host {found.name!r} is {found.state.value}: choose another")
        return found.id

    async def choose(self, spec: InstanceSpec) -> str:
        """The host a new ``spec`` goes to when none is named."""
        hosts = await self.hosts.list()
        if not hosts or [h.id for h in hosts] == [self.here]:
            return self.here  # a single host: nothing to choose
        found = loads(await self.records())
        return choose_host(spec, hosts, found, self.here, await self.network_hosts(spec))

    async def network_hosts(self, spec: InstanceSpec) -> set[str] | None:
        """The ids of the hosts that realise every network ``spec``'s NICs use (None: it
        uses none). An unknown network is left to the NIC check."""
        allowed: set[str] | None = None
        for name in {n.network for n in spec.nics if n.mode == "network" and n.network}:
            net = await self.networks.find(name)
            if net is None:
                continue
            ok = {s.host for s in await self.networks.statuses(name) if s.ok}
            ok = {h for h in ok if net.realised_on(h)}
            allowed = ok if allowed is None else allowed & ok
        return allowed
