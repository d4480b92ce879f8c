"""nftables rules of one daemon's networks, in that daemon's own tables (one transaction).

``ruleset`` is a pure function of the networks (and the taps of VLAN networks)
and is golden-tested; ``apply`` loads it with ``nft -f`` so the old and the new
rules swap in one kernel transaction (no gap: guest traffic and conntrack state
survive an agent restart). The rules:

- input: guests reach the host only for DHCP, DNS (their own network's server),
  ICMP echo and the TCP ports the network allows (answers to the host's own
  connections pass too); never a link-local (169.254.0.0/16) address of the host;
- forward: traffic stays inside its network, except that NAT networks may go
  out to non-virtfleet interfaces (and the answers come back), never to a
  link-local address (cloud metadata services live at 169.254.169.254);
  isolated networks go nowhere;
- postrouting: NAT networks are masqueraded;
- bridge forward: VLAN networks on a shared host bridge pass frames only among
  their own ports, and their ports never accept 802.1Q-tagged frames (no tag
  hopping). This kernel has neither bridge VLAN filtering nor 8021q, so VLAN
  membership is enforced here rather than by the bridge.

Several daemons on one host: each owns the table pair ``inet virtfleet-<owner>``
and ``bridge virtfleet-<owner>`` (``table_for``) and rewrites only that pair.
Every rule matches only the owner's own bridges and ports, so one daemon's rules
never touch another's guests. nftables runs every base chain on a hook: a drop in
any table is final, an accept only ends its own chain. So each daemon's drops
hold against every other daemon's accepts (a NAT network's "may go out" accept
cannot carry a packet into another daemon's bridge: that daemon drops what is
not an answer), and VLAN networks of different daemons never share frames, even
with the same tag on the same parent bridge.

Before per-daemon tables every daemon rewrote one shared pair (``LEGACY_TABLE``),
so it always held the rules of whichever daemon wrote last. ``legacy_ifnames``
lists the interfaces it names; the manager removes it when none of them belongs
to another daemon (then it can only hold its own old rules).

Must not create links or processes.
"""

from __future__ import annotations

import ipaddress
import json
import re
import subprocess
from collections.abc import Mapping, Sequence
from typing import Any

from virtfleet.errors import DriverError
from virtfleet.model.network import NetworkMode, NetworkSpec

NFT = "/usr/sbin/nft"
LEGACY_TABLE = "virtfleet"  # the pair every daemon shared before tables were per daemon
LINK_LOCAL = "169.254.0.0/16"  # metadata services (169.254.169.254) and other hosts' APIs
_OWNER = re.compile(r"[A-Za-z0-9_]{1,32}")


def table_for(owner: str) -> str:
    """The name of ``owner``'s tables (``virtfleet-<owner>``, in both families)."""
    if not _OWNER.fullmatch(owner):
        raise ValueError(f"owner {owner!r} is not 1-32 letters, digits or underscores")
    return f"{LEGACY_TABLE}-{owner}"


def _names(items: Sequence[str]) -> str:
    return "{ " + ", ".join(f'"{i}"' for i in items) + " }"


def ruleset(
    networks: Sequence[NetworkSpec],
    vlan_ports: Mapping[str, Sequence[str]],
    table: str,
) -> str:
    """The full nft script: replaces both tables ``table`` (``inet`` and ``bridge``) atomically."""
    routed = sorted((n for n in networks if n.mode is not NetworkMode.BRIDGED), key=_by_name)
    vlans = sorted((n for n in networks if n.vlan is not None), key=_by_name)
    script = removal(table).splitlines()
    if routed:
        script += _inet(routed, table)
    if vlans:
        script += _bridge(vlans, vlan_ports, table)
    return "\n".join(script) + "\n"


def removal(table: str) -> str:
    """The nft script that deletes both tables ``table`` (whether or not they exist)."""
    lines = [f"table inet {table}", f"delete table inet {table}"]
    lines += [f"table bridge {table}", f"delete table bridge {table}"]
    return "\n".join(lines) + "\n"


def _by_name(spec: NetworkSpec) -> str:
    return spec.name


def _inet(routed: list[NetworkSpec], table: str) -> list[str]:
    ours = _names([n.name for n in routed])
    lines = [f"table inet {table} {{", *_input(routed, ours), *_forward(routed, ours)]
    nat = [n for n in routed if n.mode is NetworkMode.NAT]
    if nat:
        lines += ["  chain postrouting {", "    type nat hook postrouting priority srcnat;"]
        for net in nat:
            lines.append(
                f'    ip saddr {net.subnet} ip daddr != {net.subnet} oifname != "{net.name}" '
                "masquerade"
            )
        lines.append("  }")
    lines.append("}")
    return lines


def _input(routed: list[NetworkSpec], ours: str) -> list[str]:
    lines = ["  chain input {", "    type filter hook input priority filter; policy accept;"]
    lines.append(f"    iifname {ours} ct state established,related accept")
    lines.append(f"    iifname {ours} ip daddr {LINK_LOCAL} drop")
    lines.append(f"    iifname {ours} udp dport {{ 67, 547 }} accept")
    for net in routed:
        lines += _dns(net)
    lines.append(f"    iifname {ours} icmp type echo-request accept")
    lines.append(f"    iifname {ours} meta l4proto ipv6-icmp accept")
    for net in routed:
        if net.allow_host_tcp:
            ports = ", ".join(str(p) for p in sorted(set(net.allow_host_tcp)))
            lines.append(f'    iifname "{net.name}" tcp dport {{ {ports} }} accept')
    return [*lines, f"    iifname {ours} drop", "  }"]


def _forward(routed: list[NetworkSpec], ours: str) -> list[str]:
    lines = ["  chain forward {", "    type filter hook forward priority filter; policy accept;"]
    lines.append(f"    iifname {ours} ip daddr {LINK_LOCAL} drop")
    for net in routed:
        lines.append(f'    iifname "{net.name}" oifname "{net.name}" accept')
    lines.append(f"    iifname {ours} oifname {ours} drop")
    for net in routed:
        if net.mode is NetworkMode.NAT:
            lines.append(f'    iifname "{net.name}" ip saddr {net.subnet} accept')
            lines.append(f'    oifname "{net.name}" ct state established,related accept')
    return [*lines, f"    iifname {ours} drop", f"    oifname {ours} drop", "  }"]


def _dns(net: NetworkSpec) -> list[str]:
    """A network's DNS: only to its own gateway (IPv4; IPv6 on-link or the subnet's ::1),
    never to another network's dnsmasq, which would tell the names of its guests."""
    v6 = [str(ipaddress.IPv6Network(net.ipv6_subnet)[1])] if net.ipv6_subnet else []
    dests = [f"ip6 daddr {{ {', '.join([*v6, 'fe80::/10'])} }}"]
    if net.gateway is not None:
        dests.insert(0, f"ip daddr {net.gateway.ip}")
    dport = "meta l4proto { tcp, udp } th dport 53 accept"
    return [f'    iifname "{net.name}" {dest} {dport}' for dest in dests]


def _bridge(vlans: list[NetworkSpec], ports: Mapping[str, Sequence[str]], table: str) -> list[str]:
    lines = [f"table bridge {table} {{"]
    for net in vlans:
        members = sorted(ports.get(net.name, ()))
        elements = f" elements = {_names(members)};" if members else ""
        lines.append(f"  set vlan_{net.name.replace('-', '_')} {{ type ifname;{elements} }}")
    lines += ["  chain forward {", "    type filter hook forward priority filter; policy accept;"]
    for net in vlans:
        group = f"@vlan_{net.name.replace('-', '_')}"
        lines.append(f"    iifname {group} ether type 8021q drop")
        lines.append(f"    iifname {group} oifname != {group} drop")
        lines.append(f"    oifname {group} iifname != {group} drop")
    lines += ["  }", "}"]
    return lines


def present(table: str) -> bool:
    """Whether either of the tables ``table`` exists (a read-only listing)."""
    try:
        proc = subprocess.run(
            [NFT, "list", "tables"], capture_output=True, text=True, timeout=30, check=False
        )
    except OSError:
        return False
    wanted = {f"table inet {table}", f"table bridge {table}"}
    return any(line.strip() in wanted for line in proc.stdout.splitlines())


def legacy_ifnames() -> set[str] | None:
    """The interface names the old shared tables match on; ``None`` if neither exists."""
    if not present(LEGACY_TABLE):
        return None
    names: set[str] = set()
    for family in ("inet", "bridge"):
        argv = [NFT, "-j", "list", "table", family, LEGACY_TABLE]
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
            if proc.returncode == 0:
                names |= ifnames(json.loads(proc.stdout))
        except (OSError, subprocess.TimeoutExpired, ValueError, AttributeError) as err:
            raise DriverError(f"cannot read the old table {family} {LEGACY_TABLE}: {err}") from err
    return names


def ifnames(listing: Any) -> set[str]:
    """Every interface name in an ``nft -j list`` document: ``iifname``/``oifname`` match
    values and the elements of ``ifname`` sets."""
    names: set[str] = set()
    for item in listing.get("nftables", []):
        if "set" in item and item["set"].get("type") == "ifname":
            names |= {e for e in item["set"].get("elem", []) if isinstance(e, str)}
        for expr in item.get("rule", {}).get("expr", []):
            match = expr.get("match", {})
            if match.get("left", {}).get("meta", {}).get("key") in ("iifname", "oifname"):
                names |= _values(match.get("right"))
    return names


def _values(right: Any) -> set[str]:
    items = right.get("set", []) if isinstance(right, dict) else [right]
    return {v for v in items if isinstance(v, str) and not v.startswith("@")}


def apply(script: str) -> None:
    """Load ``script`` in one transaction; ``DriverError`` (nothing changed) if nft refuses."""
    try:
        proc = subprocess.run(
            [NFT, "-f", "-"], input=script, capture_output=True, text=True, timeout=30, check=False
        )
    except OSError as err:
        raise DriverError(f"cannot run {NFT}: {err}") from err
    if proc.returncode != 0:
        why = " ".join(proc.stderr.split())[:300]
        raise DriverError(f"nftables refused the network rules: {why}")
