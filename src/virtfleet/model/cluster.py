"""The cluster as one member sees it (``GET /1.0/cluster``): the store it runs on, etcd's
members when that store is etcd, the hosts with their liveness, and which one is this
host. Pure data."""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from virtfleet.model.host import HostCapacity, HostDisk, HostState

JOIN_PREFIX = "vfjoin1."


class StoreMember(BaseModel):
    """One etcd member: from the cluster's member list and that member's own status."""

    id: str  # etcd's member id, hex
    name: str
    client_urls: list[str] = Field(default_factory=list)
    leader: bool = False
    db_size_bytes: int | None = None
    raft_index: int | None = None
    version: str | None = None  # the etcd server version
    error: str | None = None  # why its status could not be read (member down, unstarted)


class ClusterHost(BaseModel):
    """One host of ``/hosts``: ``lease_age_s`` is how long its liveness key has lived
    (since it registered on its current lease; None once the lease lapsed).

    ``instances``: how many it owns, ``running`` of them; ``allocated_*``: what those that
    run or are asked to run hold, as admission and placement count it, against the limits
    in ``capacity``. ``etcd``: the etcd member this host runs (the member named like the
    host), None when it runs none (a single host, or an etcd run outside the platform).
    """

    id: str
    name: str
    state: HostState
    alive: bool
    lease_age_s: float | None = None
    api_url: str | None = None
    this_host: bool = False
    capacity: HostCapacity = Field(default_factory=HostCapacity)
    instances: int = 0
    running: int = 0
    allocated_vcpus: int = 0
    allocated_memory_mib: int = 0
    disks: list[HostDisk] = Field(default_factory=list)
    versions: dict[str, str] = Field(default_factory=dict)
    etcd: StoreMember | None = None


class ClusterStatus(BaseModel):
    store: Literal["sqlite", "memory", "etcd"]
    summary: str  # "single host (embedded SQLite)", "etcd cluster of 3 members", ...
    host_id: str  # this host's id
    members: list[StoreMember] = Field(default_factory=list)  # etcd only
    hosts: list[ClusterHost] = Field(default_factory=list)
    instances: int = 0  # every instance of the cluster (owned by a listed host or not)


class HostRemoval(BaseModel):
    """What ``cluster remove HOST --force`` did: the host record is gone, and its etcd
    member (when it had one by its name); ``orphaned``: instances it owned, which stay
    listed with their owner offline."""

    host_id: str
    name: str
    etcd_member_removed: bool
    orphaned: list[str] = Field(default_factory=list)


class CreateJoinToken(BaseModel):
    """``cluster token create``: how long the one-time token lives (60 s to 7 days)."""

    model_config = {"extra": "forbid"}

    ttl_s: float = 3600.0


class ClusterInitRequest(BaseModel):
    """``cluster init``: where this host's etcd member listens (its address defaults to
    the host of the daemon's API listener, else loopback)."""

    model_config = {"extra": "forbid"}

    address: str | None = None
    client_port: int = Field(2379, ge=1, le=65535)
    peer_port: int = Field(2380, ge=1, le=65535)
    rename_suffix: str | None = Field(
        None,
        min_length=1,
        max_length=32,
        description="Bring stopped instances whose names the cluster has as NAME+suffix.",
    )


class ClusterInitResult(BaseModel):
    """What ``cluster init`` did: the member it started, how many keys moved into etcd,
    where the SQLite backup is, and whether the daemon restarts on the etcd store now."""

    member: str
    client_url: str
    ca_fingerprint: str
    keys_copied: int
    backup: str
    restarting: bool


class JoinToken(BaseModel):
    """What a join token carries (the secret included)."""

    api_url: str
    ca_fingerprint: str
    api_fingerprint: str | None = None  # None: the API is plain HTTP (loopback only)
    secret: str

    def encode(self) -> str:
        raw = self.model_dump_json().encode()
        return JOIN_PREFIX + base64.urlsafe_b64encode(raw).decode().rstrip("=")


class NewJoinToken(BaseModel):
    """``cluster token create``'s answer: the token (shown once) and what it carries."""

    token: str
    expires_at: datetime
    api_url: str
    ca_fingerprint: str


class ClusterIdentity(BaseModel):
    """Where a joining host reaches this cluster and what it pins."""

    api_url: str
    ca_fingerprint: str
    api_fingerprint: str | None = None


class JoinRequest(BaseModel):
    """What a joining host's daemon sends the cluster (``POST /1.0/cluster/members``):
    the token's secret, its member name, its etcd peer URL, a certificate request for its
    member key, and its instances' names (checked for collisions before anything)."""

    model_config = {"extra": "forbid"}

    secret: str
    name: str = Field(min_length=1, max_length=63)
    peer_url: str
    csr: str
    instances: list[str] = Field(default_factory=list)
    rename_suffix: str = ""  # import colliding instances as NAME+suffix instead of refusing
    running: list[str] = Field(default_factory=list)  # its instances that run (not renamed)


class JoinGrant(BaseModel):
    """The cluster's answer: the CA certificate, the joiner's certificate, and how its etcd
    member starts (``--initial-cluster``, the other members' client URLs)."""

    member_id: str
    ca_cert: str
    cert: str
    initial_cluster: str
    client_urls: list[str]
    renamed: dict[str, str] = Field(default_factory=dict)  # joiner's name -> its cluster name


class ClusterLeaveResult(BaseModel):
    """What ``cluster leave`` did: this host's etcd member left the cluster, and the
    daemon restarts as a single host on a fresh SQLite store (the old file kept)."""

    member: str
    kept: str  # the pre-leave SQLite file, moved aside
    restarting: bool


class ClusterJoinRequest(BaseModel):
    """``cluster join URL --token T``, sent to the joining host's own daemon."""

    model_config = {"extra": "forbid"}

    url: str
    token: str
    address: str | None = None
    client_port: int = Field(2379, ge=1, le=65535)
    peer_port: int = Field(2380, ge=1, le=65535)
    rename_suffix: str | None = Field(
        None,
        min_length=1,
        max_length=32,
        description="Bring stopped instances whose names the cluster has as NAME+suffix.",
    )


class ClusterJoinResult(BaseModel):
    """What ``cluster join`` did: this host's etcd member, the guests it brought into the
    cluster, the SQLite backup, and whether the daemon restarts on etcd now."""

    member: str
    client_url: str
    instances: list[str]
    backup: str
    restarting: bool
    renamed: dict[str, str] = Field(default_factory=dict)  # old name -> name in the cluster
