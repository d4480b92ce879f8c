"""``virtfleet network ...``: create, list, show and delete virtual networks.

Owns arguments -> client calls -> tables/JSON for networks. Must not touch links.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from virtfleet.cli import output
from virtfleet.cli.context import JsonOpt, command, get_client
from virtfleet.model.network import Network, NetworkHostStatus, NetworkScope

app = typer.Typer(
    help="Virtual networks (bridges with DHCP/DNS, NAT, VLANs).", no_args_is_help=True
)
NameArg = Annotated[str, typer.Argument(help="Network name (it names the bridge).")]


@command(app, "create")
def create(
    name: NameArg,
    mode: Annotated[str, typer.Option("--mode", help="nat, isolated or bridged.")] = "nat",
    subnet: Annotated[str | None, typer.Option("--subnet", help="IPv4 CIDR.")] = None,
    dhcp_start: Annotated[str | None, typer.Option("--dhcp-start")] = None,
    dhcp_end: Annotated[str | None, typer.Option("--dhcp-end")] = None,
    ipv6: Annotated[str | None, typer.Option("--ipv6", help="A /64 announced by RA.")] = None,
    vlan: Annotated[int | None, typer.Option("--vlan", help="VLAN id (bridged).")] = None,
    parent: Annotated[str | None, typer.Option("--parent", help="Host bridge (bridged).")] = None,
    allow_tcp: Annotated[
        list[int] | None, typer.Option("--allow-host-tcp", help="Host TCP port guests may reach.")
    ] = None,
    host: Annotated[
        str | None,
        typer.Option("--host", help="Cluster member (id or name) owning a nat/isolated network."),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Create a network: its bridge, DHCP/DNS and rules exist once this returns (in a
    cluster: on the host that answers; the other members report theirs in `show`)."""
    body: dict[str, Any] = {"name": name, "mode": mode, "allow_host_tcp": allow_tcp or []}
    optional = {
        "subnet": subnet,
        "dhcp_start": dhcp_start,
        "dhcp_end": dhcp_end,
        "ipv6_subnet": ipv6,
        "vlan": vlan,
        "parent": parent,
        "host": host,
    }
    body.update({k: v for k, v in optional.items() if v is not None})
    net = get_client().create_network(body)
    if json_out:
        output.print_json(net)
    else:
        output.done(f"network {name} created on bridge {net.state.bridge}", False)


@command(app, "list")
def list_(json_out: JsonOpt = False) -> None:
    """List networks."""
    nets = get_client().list_networks()
    if json_out:
        output.print_json(nets)
        return
    output.table(
        ["NAME", "MODE", "HOST", "SUBNET", "VLAN", "BRIDGE", "DHCP", "LEASES", "USED BY"],
        [
            [
                n.name,
                n.spec.mode.value,
                _where(n),
                n.spec.subnet or "-",
                str(n.spec.vlan or "-"),
                n.state.bridge if n.state.present else f"{n.state.bridge} (missing)",
                "running" if n.state.dnsmasq_pid else "-",
                str(len(n.state.leases)),
                ", ".join(n.state.users) or "-",
            ]
            for n in nets
        ],
    )


@command(app, "show")
def show(name: NameArg, json_out: JsonOpt = False) -> None:
    """Show one network, its leases and the instances on it."""
    n = get_client().get_network(name)
    if json_out:
        output.print_json(n)
        return
    s = n.spec
    dhcp = f"{s.dhcp_start} - {s.dhcp_end}" if s.dhcp_start else "-"
    leases = ", ".join(f"{lease.ip} {lease.mac} {lease.hostname}" for lease in n.state.leases)
    output.fields(
        [
            ("name", n.name),
            ("mode", s.mode.value),
            ("host", _where(n)),
            ("subnet", s.subnet or "-"),
            ("gateway", str(s.gateway.ip) if s.gateway else "-"),
            ("dhcp range", dhcp),
            ("ipv6", s.ipv6_subnet or "-"),
            ("vlan", str(s.vlan or "-")),
            ("bridge", n.state.bridge + ("" if n.state.present else " (missing)")),
            ("dnsmasq pid", str(n.state.dnsmasq_pid or "-")),
            ("leases", leases or "-"),
            ("used by", ", ".join(n.state.users) or "-"),
            *[(f"on {h.host_name or h.host}", _status(h)) for h in n.hosts],
        ]
    )


def _where(n: Network) -> str:
    """Where the network exists: every member (cluster scope) or its owning host."""
    if n.scope is NetworkScope.CLUSTER:
        return "all members"
    return n.host_name or n.host or "this host"


def _status(h: NetworkHostStatus) -> str:
    return "ok" if h.ok else f"failed: {h.reason}"


@command(app, "delete")
def delete(name: NameArg, json_out: JsonOpt = False) -> None:
    """Delete a network no instance uses (a missing network is not an error)."""
    deleted = get_client().delete_network(name)
    if json_out:
        output.print_json({"name": name, "deleted": deleted})
    else:
        output.done(
            f"network {name} deleted" if deleted else f"network {name} did not exist", False
        )
