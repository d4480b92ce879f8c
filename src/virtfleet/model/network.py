"""Virtual networks: what an admin defines (``NetworkSpec``) and what the host reports.

Pure data with validation; no I/O. A network is a Linux bridge named after the
network (so its name follows interface-name rules and may collide with a host
interface, which the host layer checks), with DHCP/DNS by dnsmasq for ``nat``
and ``isolated`` networks. ``bridged`` networks attach guests to an existing
host bridge (``parent``), optionally on one VLAN of it (VLAN filtering).

In a cluster a network has a scope (``NetworkScope``): a bridged network (and so a
VLAN) is one definition realised by every member, each reporting its own
``NetworkHostStatus``; a nat/isolated network is owned by one host (``host``), whose
bridge, dnsmasq and leases exist only there. Names are unique cluster-wide either way.
"""

from __future__ import annotations

import ipaddress
import re
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from virtfleet.errors import InvalidNameError

# A network's name is its bridge's interface name: IFNAMSIZ is 16 bytes with the NUL.
_NET_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,13}[a-z0-9]$")
NET_NAME_PATTERN = _NET_NAME_RE.pattern
MAX_VLAN = 4094
NetNameStr = Annotated[str, Field(json_schema_extra={"pattern": NET_NAME_PATTERN, "maxLength": 15})]


def validate_network_name(name: str) -> str:
    """Return ``name`` if it is a valid network (and bridge) name, else ``InvalidNameError``."""
    if not isinstance(name, str) or not _NET_NAME_RE.fullmatch(name):
        raise InvalidNameError(
            f"invalid network name {repr(name)[:80]}: use 2-15 lowercase letters, digits "
            "or '-', starting with a letter (it names the bridge interface)"
        )
    return name


class NetworkMode(StrEnum):
    NAT = "nat"  # own subnet, DHCP/DNS, masqueraded to the host's other interfaces
    ISOLATED = "isolated"  # own subnet, DHCP/DNS, no way out
    BRIDGED = "bridged"  # guests join an existing host bridge (``parent``), maybe on a VLAN


class NetworkScope(StrEnum):
    CLUSTER = "cluster"  # bridged/VLAN: one definition, realised on every member
    HOST = "host"  # nat/isolated: realised on its owning host only


class NetworkSpec(BaseModel):
    """Desired configuration of one network. For nat/isolated the host takes the subnet's
    first address; the DHCP range defaults to the second half of the subnet."""

    model_config = ConfigDict(extra="forbid")

    name: NetNameStr
    mode: NetworkMode = NetworkMode.NAT
    subnet: str | None = None  # IPv4 CIDR, e.g. 10.10.0.0/24 (required unless bridged)
    dhcp_start: str | None = None
    dhcp_end: str | None = None
    ipv6_subnet: str | None = None  # optional /64 announced by router advertisements
    vlan: Annotated[int, Field(ge=1, le=MAX_VLAN)] | None = None
    parent: str | None = None  # bridged only: the host bridge guests join
    allow_host_tcp: list[Annotated[int, Field(ge=1, le=65535)]] = Field(
        default_factory=list, max_length=32
    )  # host TCP ports guests may reach besides DHCP/DNS
    # nat/isolated: the id (or, in a request, the name) of the host that owns it; unset in a
    # request: the host that receives it. None in records older than schema 5: every host.
    host: str | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return validate_network_name(v)

    @model_validator(mode="after")
    def _consistent(self) -> NetworkSpec:
        if self.mode is NetworkMode.BRIDGED:
            _check_bridged(self)
            if self.host is not None:
                raise ValueError("a bridged network belongs to every host: it takes no host")
            return self
        if self.parent is not None:
            raise ValueError("parent is only for bridged networks")
        if self.vlan is not None:
            raise ValueError("a VLAN id needs a bridged network (VLANs live on its parent)")
        if self.subnet is None:
            raise ValueError(f"a {self.mode.value} network needs an IPv4 subnet")
        _check_ipv4(self)
        if self.ipv6_subnet is not None:
            net6 = _network(self.ipv6_subnet, 6, "ipv6_subnet")
            if net6.prefixlen != 64:
                raise ValueError("ipv6_subnet must be a /64 (SLAAC needs it)")
        return self

    def with_defaults(self) -> NetworkSpec:
        """The spec with the DHCP range made explicit (second half of the subnet)."""
        if self.subnet is None or (self.dhcp_start and self.dhcp_end):
            return self
        net = ipaddress.IPv4Network(self.subnet)
        hosts = list(net.hosts())
        start = hosts[max(1, len(hosts) // 2)]
        return self.model_copy(
            update={"dhcp_start": self.dhcp_start or str(start), "dhcp_end": str(hosts[-1])}
        )

    @property
    def scope(self) -> NetworkScope:
        return NetworkScope.CLUSTER if self.mode is NetworkMode.BRIDGED else NetworkScope.HOST

    def realised_on(self, host_id: str) -> bool:
        """Whether host ``host_id`` makes this network (every host for a cluster network
        and for a host network recorded before it named its host)."""
        return self.scope is NetworkScope.CLUSTER or self.host in (None, host_id)

    @property
    def ipv4(self) -> ipaddress.IPv4Network | None:
        return ipaddress.IPv4Network(self.subnet) if self.subnet else None

    @property
    def gateway(self) -> ipaddress.IPv4Interface | None:
        """The host's address on the network (the subnet's first address)."""
        net = self.ipv4
        if net is None:
            return None
        return ipaddress.IPv4Interface(f"{net.network_address + 1}/{net.prefixlen}")

    @property
    def bridge(self) -> str:
        """The bridge guests' NICs join."""
        return self.parent if self.mode is NetworkMode.BRIDGED and self.parent else self.name


def _check_bridged(spec: NetworkSpec) -> None:
    if not spec.parent:
        raise ValueError("a bridged network needs parent: the host bridge to join")
    if spec.subnet or spec.dhcp_start or spec.dhcp_end or spec.ipv6_subnet:
        raise ValueError("a bridged network takes no subnet or DHCP range (its LAN has them)")


def _network(text: str, version: int, what: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        net = ipaddress.ip_network(text, strict=True)
    except ValueError as err:
        raise ValueError(f"invalid {what} {text!r}: {err}") from err
    if net.version != version:
        raise ValueError(f"{what} {text!r} is not IPv{version}")
    return net


def _check_ipv4(spec: NetworkSpec) -> None:
    net = _network(spec.subnet or "", 4, "subnet")
    if not 8 <= net.prefixlen <= 29:
        raise ValueError(f"subnet {spec.subnet} must be between /8 and /29")
    if not net.is_private:
        raise ValueError(f"subnet {spec.subnet} is not a private range")
    gateway = net.network_address + 1
    for what, text in (("dhcp_start", spec.dhcp_start), ("dhcp_end", spec.dhcp_end)):
        if text is None:
            continue
        try:
            addr = ipaddress.IPv4Address(text)
        except ValueError as err:
            raise ValueError(f"invalid {what} {text!r}") from err
        if addr not in net or addr in (net.network_address, net.broadcast_address, gateway):
            raise ValueError(f"{what} {text} is outside the usable part of subnet {spec.subnet}")
    if (spec.dhcp_start is None) != (spec.dhcp_end is None):
        raise ValueError("give both dhcp_start and dhcp_end, or neither")
    start, end = spec.dhcp_start, spec.dhcp_end
    if start and end and ipaddress.IPv4Address(start) > ipaddress.IPv4Address(end):
        raise ValueError("dhcp_start is after dhcp_end")


def overlapping(spec: NetworkSpec, others: list[NetworkSpec]) -> str | None:
    """Name of the first other network whose subnet overlaps ``spec``'s, else None."""
    for other in others:
        if other.name == spec.name:
            continue
        for mine, theirs in ((spec.subnet, other.subnet), (spec.ipv6_subnet, other.ipv6_subnet)):
            if (
                mine
                and theirs
                and ipaddress.ip_network(mine).overlaps(ipaddress.ip_network(theirs))
            ):
                return other.name
    return None


class Lease(BaseModel):
    """One DHCP lease as dnsmasq recorded it."""

    mac: str
    ip: str
    hostname: str = ""
    expires_at: int = 0  # Unix time; 0 = infinite


class NetworkState(BaseModel):
    """What the host observes of one network."""

    bridge: str
    present: bool = False  # the bridge exists
    dnsmasq_pid: int | None = None
    leases: list[Lease] = Field(default_factory=list)
    users: list[str] = Field(default_factory=list)  # instances whose NICs use it


class NetworkHostStatus(BaseModel):
    """How one host realised one network, as that host's agent reported it."""

    host: str  # the host's id
    host_name: str = ""  # filled in views
    ok: bool
    reason: str = ""  # why not, in one line (e.g. the parent bridge is missing there)
    leases: list[Lease] = Field(default_factory=list)  # nat/isolated: its dnsmasq's


class Network(BaseModel):
    """What users see of one network: its spec, its scope and owning host, what the
    host serving the request observes (or, for another host's network, what its owner
    reported) and each member's realisation."""

    name: str
    spec: NetworkSpec
    state: NetworkState
    scope: NetworkScope = NetworkScope.HOST
    host: str | None = None  # host networks: the owner's id
    host_name: str | None = None
    hosts: list[NetworkHostStatus] = Field(default_factory=list)


class NicAddress(BaseModel):
    """One address of an instance's NIC, and where the platform learned it."""

    nic: int
    network: str
    mac: str
    ip: str
    source: str = "dhcp"  # dnsmasq's lease file
