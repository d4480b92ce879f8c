"""The cluster overview (``GET /1.0/cluster``): which store this member runs on, etcd's
members when it is etcd, and every host of ``/hosts`` with its liveness, its capacity,
what its instances hold (counted as placement counts them) and its etcd member's health.

Owns assembling that view and the door to ``cluster init`` (a ``Former`` the
composition root hands in); the etcd member figures come from the store
(``EtcdStore.members``, handed in by the composition root), the hosts from ``HostRepo``.
Must not change anything.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Literal, Protocol
from urllib.parse import urlsplit

from virtfleet.errors import (
    AlreadyExistsError,
    AuthError,
    ConflictError,
    InUseError,
    InvalidInputError,
)
from virtfleet.model.cluster import (
    ClusterHost,
    ClusterInitRequest,
    ClusterInitResult,
    ClusterJoinRequest,
    ClusterJoinResult,
    ClusterLeaveResult,
    ClusterStatus,
    HostRemoval,
    JoinGrant,
    JoinRequest,
    NewJoinToken,
    StoreMember,
)
from virtfleet.model.enums import PowerState
from virtfleet.model.host import HostRecord
from virtfleet.model.names import validate_name
from virtfleet.service.allocations import Allocations
from virtfleet.service.jointokens import JoinTokens
from virtfleet.service.placement import Load, Placement, loads
from virtfleet.state.hosts import HostRepo
from virtfleet.state.keys import alive_key, host_key
from virtfleet.state.repos import InstanceRecord, InstanceRepo
from virtfleet.state.store import StateStore

StoreKind = Literal["sqlite", "memory", "etcd"]
SUMMARY = {"sqlite": "single host (embedded SQLite)", "memory": "single host (memory store)"}


class Former(Protocol):
    """Turns this single host into a one-member cluster (the composition root's)."""

    async def init(self, request: ClusterInitRequest) -> ClusterInitResult: ...

    async def join(self, request: ClusterJoinRequest) -> ClusterJoinResult: ...

    async def leave(self) -> ClusterLeaveResult: ...

    def after_init(self) -> None:
        """Once the reply went out: restart the daemon on the cluster's store."""
        ...


class MemberAdmin(Protocol):
    """The cluster CA and etcd's member API, for admitting a joining host."""

    def ca_cert(self) -> str: ...

    def sign(self, csr: str, host: str) -> str:
        """The joiner's certificate for its address ``host``."""
        ...

    async def add(self, name: str, peer_url: str) -> tuple[str, str, list[str]]:
        """Add etcd member ``name`` (a learner): (id, initial cluster, client URLs)."""
        ...

    async def remove(self, member_id: str) -> None: ...


class ClusterService:
    def __init__(
        self,
        store: StateStore,
        host_id: str,
        kind: StoreKind,
        members: Callable[[], Awaitable[list[StoreMember]]] | None = None,
        former: Former | None = None,
        remove_member: Callable[[str], Awaitable[bool]] | None = None,
        tokens: JoinTokens | None = None,
        admin: MemberAdmin | None = None,
        tally: Allocations | None = None,
    ) -> None:
        """``members``: etcd's member list with their status (None: not etcd);
        ``former``: what ``cluster init`` runs (None: not possible on this daemon);
        ``tally``: capacity's allocation tally (spares the status a listing of every
        instance while it follows the store)."""
        self._store = store
        self._hosts = HostRepo(store)
        self._host_id = host_id
        self._kind = kind
        self._members = members
        self._former = former
        self._remove_member = remove_member  # etcd's MemberRemove by name (None: not etcd)
        self.tokens = tokens  # one-time join tokens (None: none on this daemon)
        self._admin = admin  # the CA and etcd's member API (None: no cluster CA here)
        self._placement = Placement(store, host_id, tally)  # its per-host loads and records

    async def init(self, request: ClusterInitRequest) -> ClusterInitResult:
        """Form a one-member cluster from this host (see ``app.clustering``)."""
        if self._former is None:
            raise ConflictError("cluster init is not available on this daemon")
        return await self._former.init(request)

    async def join(self, request: ClusterJoinRequest) -> ClusterJoinResult:
        """Join a running cluster with a token (see ``app.joining``)."""
        if self._former is None:
            raise ConflictError("cluster join is not available on this daemon")
        return await self._former.join(request)

    async def leave(self) -> ClusterLeaveResult:
        """Take this host out of the cluster; refused while it owns instances (named)."""
        if self._former is None:
            raise ConflictError("cluster leave is not available on this daemon")
        owned = sorted(
            r.name for r in await InstanceRepo(self._store).list(shared=True)
            if r.owner is not None and r.owner.host == self._host_id
        )  # fmt: skip
        if owned:
            raise InUseError(
                f"this host owns instances {', '.join(owned)}: move or delete them first"
            )
        return await self._former.leave()

    def after_init(self) -> None:
        if self._former is not None:
            self._former.after_init()

    async def status(self) -> ClusterStatus:
        members = await self._members() if self._members is not None else []
        records = await self._placement.records()
        tally = _Tally(records, {m.name: m for m in members})
        hosts = [await self._host(h, tally) for h in await self._hosts.list()]
        return ClusterStatus(
            store=self._kind,
            summary=_summary(self._kind, members),
            host_id=self._host_id,
            members=members,
            hosts=hosts,
            instances=len(records),
        )

    async def create_join_token(self, ttl_s: float) -> NewJoinToken:
        if self.tokens is None:
            raise ConflictError("join tokens are not available on this daemon")
        return await self.tokens.create(ttl_s)

    async def admit(self, request: JoinRequest) -> JoinGrant:
        """A host joins with a token: refused (nothing changed) for a wrong, expired or
        used token and when its name or any of its instances' names is taken; else its
        certificate is signed, its etcd member added as a learner and the token used up."""
        if self.tokens is None or self._admin is None:
            raise ConflictError("this host cannot admit members: it has no cluster CA")
        await self.tokens.check(request.secret)
        renamed = await self._check_names(request)
        host = urlsplit(request.peer_url).hostname
        if not host or urlsplit(request.peer_url).scheme != "https":
            raise InvalidInputError(f"peer URL {request.peer_url!r} must be https://HOST:PORT")
        cert = self._admin.sign(request.csr, host)
        member_id, initial, clients = await self._admin.add(request.name, request.peer_url)
        try:
            await self.tokens.consume(request.secret)
        except AuthError:
            await self._admin.remove(member_id)  # another host used the token meanwhile
            raise
        return JoinGrant(
            member_id=member_id, ca_cert=self._admin.ca_cert(), cert=cert,
            initial_cluster=initial, client_urls=clients, renamed=renamed,
        )  # fmt: skip

    async def _check_names(self, request: JoinRequest) -> dict[str, str]:
        """The joiner's instances to import under another name (old -> new): those whose
        names the cluster has, renamed NAME+suffix; refused (nothing changed) without a
        suffix, for one that runs, and when a new name is invalid or taken too."""
        if any(h.name == request.name for h in await self._hosts.list()):
            raise AlreadyExistsError(f"a host named {request.name!r} is already a member")
        names = {r.name for r in await InstanceRepo(self._store).list(shared=True)}
        taken = sorted(names & set(request.instances))
        if not taken:
            return {}
        if not request.rename_suffix:
            raise AlreadyExistsError(
                f"instances named {', '.join(taken)} already exist in the cluster: "
                "join with --rename-suffix or rename them first"
            )
        running = sorted(set(taken) & set(request.running))
        if running:
            raise ConflictError(
                f"instances {', '.join(running)} run on the joining host and their names are "
                "taken in the cluster: stop them to join with --rename-suffix"
            )
        renamed = {old: old + request.rename_suffix for old in taken}
        for new in renamed.values():
            validate_name(new, "renamed instance name")
        clash = sorted(set(renamed.values()) & (names | set(request.instances)))
        if clash:
            raise AlreadyExistsError(
                f"the renamed instances {', '.join(clash)} would collide too: "
                "choose another --rename-suffix"
            )
        return renamed

    async def remove_host(self, host: str, force: bool) -> HostRemoval:
        """Forget a host that is gone for good: its record and its etcd member. Refused
        without ``force``, for this host, and while the host is online."""
        if not force:
            raise InvalidInputError(f"removing host {host!r} forgets it for good: pass force")
        record = await self._hosts.get(host)
        if record.id == self._host_id:
            raise ConflictError(f"host {record.name!r} is this host: use cluster leave")
        if record.alive:
            raise ConflictError(
                f"host {record.name!r} is online: stop its daemon or run cluster leave there"
            )
        removed = False
        if self._remove_member is not None:
            removed = await self._remove_member(record.name)
        await self._store.delete(host_key(record.id))
        owned = [r.name for r in await InstanceRepo(self._store).list(shared=True)
                 if r.owner is not None and r.owner.host == record.id]  # fmt: skip
        return HostRemoval(
            host_id=record.id, name=record.name, etcd_member_removed=removed, orphaned=owned
        )

    async def _host(self, record: HostRecord, tally: _Tally) -> ClusterHost:
        held = tally.held.get(record.id, Load())
        return ClusterHost(
            id=record.id,
            name=record.name,
            state=record.state,
            alive=record.alive,
            lease_age_s=await self._lease_age(record.id) if record.alive else None,
            api_url=record.api_url,
            this_host=record.id == self._host_id,
            capacity=record.capacity,
            instances=tally.owned[record.id],
            running=tally.running[record.id],
            allocated_vcpus=held.vcpus,
            allocated_memory_mib=held.memory_mib,
            disks=record.disks,
            versions=record.versions,
            etcd=tally.members.get(record.name),  # a member's etcd name is its host's name
        )

    async def _lease_age(self, host_id: str) -> float | None:
        kv = await self._store.get(alive_key(host_id))
        if kv is None:
            return None  # lapsed since the listing
        try:
            since = datetime.fromisoformat(json.loads(kv.value)["since"])
        except (ValueError, KeyError, TypeError):
            return None
        return round(max(0.0, (datetime.now(UTC) - since).total_seconds()), 1)


class _Tally:
    """Per owning host id: the instances it owns, how many run, what they hold."""

    def __init__(self, records: list[InstanceRecord], members: dict[str, StoreMember]) -> None:
        owned = [(r.owner.host, r.status.power) for r in records if r.owner is not None]
        self.owned = Counter(host for host, _ in owned)
        self.running = Counter(host for host, power in owned if power is PowerState.RUNNING)
        self.held = loads(records)
        self.members = members


def _summary(kind: StoreKind, members: list[StoreMember]) -> str:
    if kind != "etcd":
        return SUMMARY[kind]
    healthy = sum(1 for m in members if m.error is None)
    count = len(members)
    return f"etcd cluster of {count} member{'s' * (count != 1)} ({healthy} answering)"
