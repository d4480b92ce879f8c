"""Network use cases: create, list, show and delete networks; NIC checks and addresses.

Owns the rules that span networks and instances: subnets must not overlap, a
VLAN (parent + tag) belongs to one network, a network in use by an instance
cannot be deleted, a NIC must name an existing network and gets a MAC no other
NIC has. A MAC is claimed by compare-and-swap (``/macs/{mac}``, written in the
instance's create commit): two creates racing for one MAC, in one daemon or two,
never both succeed. Network creates and deletes take the store's ``networks``
claim (state/locks.py), so two daemons never both pass the subnet-overlap check.
Creating or deleting a network is quick (a bridge, a dnsmasq, one rules
transaction) and answers synchronously; the host part is all-or-nothing
(``HostOps.network_create``) and the store is written only once it succeeded.

In a cluster (``NetworkScope``): a bridged network is realised by every member, a
nat/isolated one only by its owning host (``spec.host``, this host unless the create
names another). This service makes the network on this host when this host realises
it (so a conflict here is still refused before anything is written); every other
member's agent realises it from the store and reports ``NetworkHostStatus``. A NIC may
use a host network only on an instance of that host and a network only where its
realisation did not fail (``NetworkNotOnHostError``). Addresses of another host's
networks come from the leases its agent reported.
Must not touch links, processes or rules itself: the host does, through its door.
"""

from __future__ import annotations

import asyncio
import builtins
import secrets

from virtfleet.errors import (
    AlreadyExistsError,
    ConflictError,
    InUseError,
    NetworkNotOnHostError,
    NotFoundError,
    UnknownHostError,
)
from virtfleet.hostops import NetworkOps
from virtfleet.model.event import Event
from virtfleet.model.instance import InstanceSpec, NicSpec
from virtfleet.model.network import (
    Lease,
    Network,
    NetworkHostStatus,
    NetworkMode,
    NetworkScope,
    NetworkSpec,
    NetworkState,
    NicAddress,
    overlapping,
    validate_network_name,
)
from virtfleet.service.allocations import Allocations
from virtfleet.state.hosts import HostRepo
from virtfleet.state.keys import MACS
from virtfleet.state.locks import LOCAL_HOST, Claims, Session
from virtfleet.state.networks import NetworkRepo
from virtfleet.state.repos import EventLog, InstanceRepo
from virtfleet.state.store import Compare, Put, StateStore

MAC_PREFIX = "52:54:00"  # QEMU's locally administered OUI


def network_users(specs: builtins.list[InstanceSpec], network: str) -> builtins.list[str]:
    """Names of the instances with a NIC on ``network``."""
    return sorted(s.name for s in specs if any(n.network == network for n in s.nics))


class NetworkService:
    def __init__(
        self,
        store: StateStore,
        host: NetworkOps,
        events: EventLog,
        tally: Allocations | None = None,
        *,
        session: Session | None = None,
        host_id: str = LOCAL_HOST,
    ) -> None:
        self._store = store
        self._claims = Claims(store, session or Session(store), "networks", host_id)
        self._repo = NetworkRepo(store)
        self._hosts = HostRepo(store)
        self._me = host_id
        self._instances = InstanceRepo(store)
        self._host = host
        self._events = events
        self._lock = asyncio.Lock()  # creates and deletes check-then-act: one at a time
        self.tally = tally  # the store-following tally, when wired

    async def list(self) -> builtins.list[Network]:
        statuses, names = await self._repo.all_statuses(), await self._host_names()
        return [
            await self._view(spec, statuses.get(spec.name, []), names)
            for spec in await self._repo.list()
        ]

    async def get(self, name: str) -> Network:
        """The network with what the host observes and each host's realisation;
        ``NotFoundError`` if there is none."""
        spec = await self._repo.get(validate_network_name(name))
        return await self._view(spec, await self._repo.statuses(name), await self._host_names())

    async def _host_names(self) -> dict[str, str]:
        return {h.id: h.name for h in await self._hosts.list()}

    async def _view(
        self,
        spec: NetworkSpec,
        statuses: builtins.list[NetworkHostStatus],
        names: dict[str, str],
    ) -> Network:
        if spec.realised_on(self._me):
            state = await self._host.network_state(spec)
        else:  # another host's network: what its owner reported
            state = NetworkState(bridge=spec.bridge)
            for status in statuses:
                if status.host == spec.host:
                    state.present, state.leases = status.ok, status.leases
        specs = [r.spec for r in await self._instances.list()]
        state.users = sorted({*state.users, *network_users(specs, spec.name)})
        hosts = [s.model_copy(update={"host_name": names.get(s.host, "")}) for s in statuses]
        return Network(
            name=spec.name, spec=spec, state=state, scope=spec.scope, host=spec.host,
            host_name=names.get(spec.host) if spec.host else None,
            hosts=sorted(hosts, key=lambda s: (s.host_name, s.host)),
        )  # fmt: skip

    async def create(self, spec: NetworkSpec) -> Network:
        """Check everything, make it on this host (if it realises it), then record it.

        Raises before any change: ``AlreadyExistsError``, ``ConflictError`` (overlapping
        subnet, a VLAN taken, a host interface of that name), ``UnknownHostError`` (a
        ``host`` that is no member). A host failure undoes the host part and records
        nothing. A network of another host is recorded unchecked there: its agent makes
        it and reports the outcome in ``hosts``.
        """
        spec = spec.with_defaults()
        if spec.scope is NetworkScope.HOST:
            spec = spec.model_copy(update={"host": await self._owner_id(spec.host)})
        here = spec.realised_on(self._me)  # else the owner's agent makes it
        await self._check_new(spec, here)  # refused before any write (the claim is one)
        async with self._lock, self._claims.held("networks"):
            others = await self._check_new(spec, here)  # again: another daemon may be first
            if here:
                await self._host.network_create(spec, self._mine(others))
            await self._repo.create(spec)
            if here:
                await self._repo.report(spec.name, NetworkHostStatus(host=self._me, ok=True))
        await self._emit("network.created", spec.name, f"network {spec.name} created")
        return await self.get(spec.name)

    async def _owner_id(self, host: str | None) -> str:
        """The id of the host a host network is made on: ``host`` (id or name), else this."""
        if host is None or host == self._me:
            return self._me
        try:
            return (await self._hosts.get(host)).id
        except NotFoundError as err:
            names = ", ".join(h.name for h in await self._hosts.list()) or "none"
            raise UnknownHostError(f"unknown host {host!r}; the members are: {names}") from err

    def _mine(self, specs: builtins.list[NetworkSpec]) -> builtins.list[NetworkSpec]:
        return [s for s in specs if s.realised_on(self._me)]

    async def _check_new(self, spec: NetworkSpec, here: bool) -> builtins.list[NetworkSpec]:
        """The other networks, if ``spec`` may be made next to them; else the error. Names
        are unique cluster-wide; subnets must not overlap those of networks on the same
        host (two hosts' NAT networks may reuse a range, as their bridges never meet)."""
        others = await self._repo.list()
        if any(o.name == spec.name for o in others):
            raise AlreadyExistsError(f"network {spec.name!r} already exists")
        clash = overlapping(spec, [o for o in others if _share_a_host(spec, o)])
        if clash:
            raise ConflictError(f"subnet of network {spec.name} overlaps network {clash}")
        _check_vlan(spec, others)
        if here:
            await self._host.network_check(spec)
        return others

    async def delete(self, name: str) -> bool:
        """Delete a network no instance uses (``InUseError``); a missing one is success."""
        validate_network_name(name)
        async with self._lock, self._claims.held("networks"):
            spec = await self._repo.find(name)
            if spec is None:
                return False
            users = network_users([r.spec for r in await self._instances.list()], name)
            if users:
                raise InUseError(f"network {name} is in use by {', '.join(users)}")
            if spec.realised_on(self._me):  # other members' agents remove their part
                others = [o for o in await self._repo.list() if o.name != name]
                await self._host.network_remove(spec, self._mine(others))
            await self._repo.remove(name)
        await self._emit("network.deleted", name, f"network {name} deleted")
        return True

    # -- NICs of instances ---------------------------------------------------------------

    async def prepare_nics(self, spec: InstanceSpec, owner: str | None = None) -> InstanceSpec:
        """``spec`` with every network NIC checked (its network exists and, with ``owner``,
        the owning host realises it) and given a MAC.

        Raises ``NotFoundError`` for an unknown network, ``NetworkNotOnHostError`` for
        another host's network or one whose realisation failed on ``owner``,
        ``ConflictError`` for a MAC another NIC already has.
        """
        if not spec.nics:
            return spec
        taken = await self._taken_macs()
        nics: builtins.list[NicSpec] = []
        for nic in spec.nics:
            if nic.mode == "network":
                net = await self._repo.get(nic.network or "")
                if owner is not None:
                    await self._check_realised(net, owner, spec.name)
            if nic.mac and nic.mac in taken:
                raise ConflictError(f"MAC {nic.mac} is already used by another NIC")
            if nic.mac is None:
                nic = nic.model_copy(update={"mac": _new_mac(taken)})
            taken.add(nic.mac or "")
            nics.append(nic)
        return spec.model_copy(update={"nics": nics})

    async def _check_realised(self, net: NetworkSpec, owner: str, instance: str) -> None:
        """``NetworkNotOnHostError`` unless host ``owner`` realises ``net``."""
        names = await self._host_names()
        where = names.get(owner, owner)
        if not net.realised_on(owner):
            mine = names.get(net.host or "", net.host)
            raise NetworkNotOnHostError(
                f"network {net.name} is host {mine}'s (nat/isolated networks exist on one"
                f" host): instance {instance} on host {where} cannot use it; put it on"
                f" {mine} or use a bridged network"
            )
        for status in await self._repo.statuses(net.name):
            if status.host == owner and not status.ok:
                raise NetworkNotOnHostError(
                    f"network {net.name} is not realised on host {where}: {status.reason}"
                )

    async def mac_claims(
        self, spec: InstanceSpec
    ) -> tuple[builtins.list[Compare], builtins.list[Put]]:
        """The compares and writes that claim ``spec``'s MACs in its create commit. A claim
        left by an instance that no longer has the MAC is stale and taken over;
        ``ConflictError`` if another instance holds it."""
        guards: builtins.list[Compare] = []
        puts: builtins.list[Put] = []
        for mac in sorted({n.mac for n in spec.nics if n.mac}):
            key = MACS + mac
            kv = await self._store.get(key)
            if kv is not None and kv.value.decode() != spec.name:
                owner = await self._instances.find(kv.value.decode())
                if owner is not None and any(n.mac == mac for n in owner.spec.nics):
                    raise ConflictError(f"MAC {mac} is already used by another NIC")
            guards.append(Compare(key, kv.mod_revision if kv is not None else 0))
            puts.append(Put(key, spec.name.encode()))
        return guards, puts

    async def _taken_macs(self) -> set[str]:
        """The MACs instances' NICs hold: from the tally when it follows the store (a
        listing of every instance cost a create ~20 ms at 200 instances), else listed."""
        if self.tally is not None and self.tally.following:
            return self.tally.macs()
        return {
            n.mac for r in await self._instances.list(shared=True) for n in r.spec.nics if n.mac
        }

    async def remote_leases(self) -> dict[str, builtins.list[Lease]]:
        """The leases other hosts reported, by network (one range read), for ``addresses``."""
        out: dict[str, builtins.list[Lease]] = {}
        for name, statuses in (await self._repo.all_statuses()).items():
            found = [lease for s in statuses if s.host != self._me for lease in s.leases]
            if found:
                out[name] = found
        return out

    def addresses(
        self, spec: InstanceSpec, remote: dict[str, builtins.list[Lease]] | None = None
    ) -> builtins.list[NicAddress]:
        """The leased addresses of ``spec``'s network NICs: from this host's dnsmasq lease
        files, and from the leases other hosts reported (``remote_leases``)."""
        out = []
        for index, nic in enumerate(spec.nics):
            if nic.mode != "network" or not nic.network or not nic.mac:
                continue
            leases = [*self._host.network_leases(nic.network), *(remote or {}).get(nic.network, [])]
            for ip in dict.fromkeys(lease.ip for lease in leases if lease.mac == nic.mac):
                out.append(NicAddress(nic=index, network=nic.network, mac=nic.mac, ip=ip))
        return out

    async def _emit(self, kind: str, name: str, message: str) -> None:
        await self._events.append(Event(kind=kind, target=f"network/{name}", message=message))


def _share_a_host(one: NetworkSpec, other: NetworkSpec) -> bool:
    """Whether some host realises both networks."""
    if NetworkScope.CLUSTER in (one.scope, other.scope):
        return True
    return one.host is None or other.host is None or one.host == other.host


def _check_vlan(spec: NetworkSpec, others: builtins.list[NetworkSpec]) -> None:
    if spec.mode is not NetworkMode.BRIDGED:
        return
    for other in others:
        same_parent = other.mode is NetworkMode.BRIDGED and other.parent == spec.parent
        if same_parent and other.vlan == spec.vlan:
            what = f"VLAN {spec.vlan}" if spec.vlan else "untagged traffic"
            raise ConflictError(f"{what} on {spec.parent} is already network {other.name}")


def _new_mac(taken: set[str]) -> str:
    while True:
        mac = MAC_PREFIX + "".join(f":{b:02x}" for b in secrets.token_bytes(3))
        if mac not in taken:
            return mac


__all__ = ["NetworkService", "network_users"]
