"""Links through netlink (pyroute2): bridges, taps and veths the platform owns.

Every link the platform creates carries an interface alias (``IFLA_IFALIAS``)
saying so: ``virtfleet:<owner>:bridge:<network>`` or
``virtfleet:<owner>:tap|veth:<instance>:<nic>:<network>``. That alias, not the name, is how
reconciliation tells our links from the host's and from another daemon's: a link
of another kind or with another alias is never taken over (``ConflictError``).
Blocking calls: the manager runs them in a worker thread (pyroute2's sync API runs
its own event loop).
Must not decide policy (which links should exist): the manager does.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from virtfleet.errors import ConflictError, DriverError

ALIAS_PREFIX = "virtfleet:"


@dataclass(frozen=True)
class Link:
    name: str
    index: int
    kind: str  # "bridge", "tun", "veth", "" for a physical or unknown link
    alias: str
    master: int | None
    up: bool


def tap_name(instance: str, nic: int, owner: str = "") -> str:
    """A stable tap name within IFNAMSIZ: ``vt`` + 9 hex digits of the name + NIC index.

    With ``owner`` (the daemon) the digest covers it too, so two daemons' instances of
    one name never want the same tap."""
    key = f"{owner}:{instance}" if owner else instance
    digest = hashlib.sha256(key.encode()).hexdigest()[:9]
    return f"vt{digest}-{nic}"


def _claim(ipr: IPRoute, name: str, alias: str, kind: str) -> None:
    """Refuse an existing link ``name`` that is not a ``kind`` or carries another alias."""
    found = ipr.link_lookup(ifname=name)
    if not found:
        return
    link = _link(ipr.get_links(found[0])[0])
    if link.kind != kind or (link.alias and link.alias != alias):
        whose = f" ({link.alias})" if link.alias else ""
        raise ConflictError(f"interface {name} exists and is not ours{whose}")


@contextlib.contextmanager
def _netlink(what: str) -> Iterator[IPRoute]:
    try:
        with IPRoute() as ipr:
            yield ipr
    except NetlinkError as err:
        raise DriverError(f"{what}: {err.args[1] if len(err.args) > 1 else err}") from err


def list_links() -> list[Link]:
    with _netlink("listing links") as ipr:
        return [_link(msg) for msg in ipr.get_links()]


def _link(msg: Any) -> Link:
    kind = msg.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND") or ""
    return Link(
        name=msg.get("ifname"),
        index=msg["index"],
        kind=kind,
        alias=msg.get("ifalias") or "",
        master=msg.get("master"),
        up=bool(msg["flags"] & 1),
    )


def find(name: str) -> Link | None:
    return next((link for link in list_links() if link.name == name), None)


def create_bridge(name: str, alias: str, address: str | None, address6: str | None) -> None:
    """Create an up bridge with ``alias`` and the host's addresses on it (idempotent; an
    existing bridge is reused only if it has no alias or this one)."""
    with _netlink(f"creating bridge {name}") as ipr:
        _claim(ipr, name, alias, "bridge")
        if not ipr.link_lookup(ifname=name):
            ipr.link("add", ifname=name, kind="bridge")
        index = ipr.link_lookup(ifname=name)[0]
        ipr.link("set", index=index, ifalias=alias, state="up")
        for cidr in (address, address6):
            if cidr:
                ip, prefix = cidr.split("/")
                with contextlib.suppress(NetlinkError):  # already there: fine
                    ipr.addr("add", index=index, address=ip, prefixlen=int(prefix))


def create_tap(name: str, alias: str, bridge: str) -> None:
    """Create (or reuse one of ours) a persistent tap owned by root, on ``bridge`` and up."""
    with _netlink(f"creating tap {name}") as ipr:
        _claim(ipr, name, alias, "tun")
        if not ipr.link_lookup(ifname=name):
            ipr.link("add", ifname=name, kind="tuntap", mode="tap")
        enslave(ipr, name, bridge, alias)


def enslave(ipr: IPRoute, name: str, bridge: str, alias: str | None = None) -> None:
    master = ipr.link_lookup(ifname=bridge)
    if not master:
        raise DriverError(f"bridge {bridge} does not exist")
    index = ipr.link_lookup(ifname=name)[0]
    extra = {"ifalias": alias} if alias else {}
    ipr.link("set", index=index, master=master[0], state="up", **extra)


def attach(name: str, bridge: str) -> None:
    """Enslave an existing link (a tap or the host end of a veth) to ``bridge``."""
    with _netlink(f"attaching {name} to {bridge}") as ipr:
        enslave(ipr, name, bridge)


def create_veth(
    host_end: str, peer: str, alias: str, bridge: str, netns_pid: int, mac: str | None = None
) -> None:
    """A veth pair: ``host_end`` on ``bridge``, ``peer`` (with ``mac``) moved into the netns
    of ``netns_pid``."""
    with _netlink(f"creating veth {host_end}") as ipr:
        ipr.link("add", ifname=host_end, kind="veth", peer=peer)
        try:
            peer_index = ipr.link_lookup(ifname=peer)[0]
            if mac:
                ipr.link("set", index=peer_index, address=mac)
            ipr.link("set", index=peer_index, net_ns_pid=netns_pid)
            enslave(ipr, host_end, bridge, alias)
        except BaseException:
            with contextlib.suppress(NetlinkError):
                ipr.link("del", ifname=host_end)
            raise


def delete(name: str) -> None:
    """Delete a link; a missing one is success."""
    with _netlink(f"deleting {name}") as ipr:
        found = ipr.link_lookup(ifname=name)
        if found:
            with contextlib.suppress(NetlinkError):
                ipr.link("del", index=found[0])


def enable_forwarding() -> None:
    """Turn on IPv4 forwarding in this network namespace (NAT networks need it).

    Never turned off again: the host may forward for reasons of its own."""
    path = "/proc/sys/net/ipv4/ip_forward"
    with open(path) as f:
        if f.read().strip() == "1":
            return
    with open(path, "w") as f:
        f.write("1\n")


def addresses() -> list[str]:
    """Every IPv4/IPv6 network (CIDR) configured on this namespace's links."""
    with _netlink("listing addresses") as ipr:
        out = []
        for msg in ipr.get_addr():
            addr = msg.get("IFA_ADDRESS")
            if addr:
                out.append(f"{addr}/{msg['prefixlen']}")
        return out
