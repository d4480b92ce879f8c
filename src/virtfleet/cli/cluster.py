"""``virtfleet cluster ...``: the cluster as this member sees it.

Owns arguments -> client call -> table/JSON for ``cluster status`` (changes nothing)
``cluster init`` (this single host becomes a one-member cluster) and ``cluster
remove`` (forget a host that is gone).
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from virtfleet.cli import output
from virtfleet.cli.context import JsonOpt, command, get_client
from virtfleet.cli.durations import parse_duration_s
from virtfleet.cli.sizes import format_bytes
from virtfleet.model.cluster import ClusterHost, StoreMember

app = typer.Typer(
    help="The cluster (preview): the store, etcd's members and the hosts.", no_args_is_help=True
)


@command(app, "status")
def status(json_out: JsonOpt = False) -> None:
    """The store this host runs on (etcd: members, leader, db size, raft index, version),
    every host with its state and lease age, and this host."""
    found = get_client().cluster_status()
    if json_out:
        output.print_json(found)
        return
    me = next((h.name for h in found.hosts if h.this_host), "-")
    output.fields([("store", found.summary), ("this host", f"{me} ({found.host_id})")])
    if found.members:
        columns = ["MEMBER", "CLIENT URLS", "LEADER", "DB SIZE", "RAFT INDEX", "VERSION"]
        output.table(columns, map(_member_row, found.members))
    output.table(["HOST", "ID", "STATE", "LEASE AGE", "API", ""], map(_host_row, found.hosts))


@command(app, "init")
def init(
    address: Annotated[
        str | None, typer.Option(help="Address the etcd member listens on (default: the API's).")
    ] = None,
    client_port: Annotated[int, typer.Option(help="etcd client port.")] = 2379,
    peer_port: Annotated[int, typer.Option(help="etcd peer port.")] = 2380,
    json_out: JsonOpt = False,
) -> None:
    """Turn this single host into a one-member cluster: starts its etcd member (TLS from a
    new cluster CA), moves every record from SQLite into etcd, keeps a backup of the
    SQLite file and restarts the daemon on etcd (guests keep running). Admin only."""
    body: dict[str, Any] = {"client_port": client_port, "peer_port": peer_port}
    if address is not None:
        body["address"] = address
    done = get_client().cluster_init(**body)
    if json_out:
        output.print_json(done)
        return
    output.fields(
        [
            ("etcd member", f"{done.member} at {done.client_url}"),
            ("cluster CA", done.ca_fingerprint),
            ("records moved", done.keys_copied),
            ("SQLite backup", done.backup),
            ("daemon", "restarting on etcd" if done.restarting else "restart it to use etcd"),
        ]
    )


@command(app, "join")
def join(
    url: Annotated[str, typer.Argument(help="The API URL the token names.")],
    token: Annotated[str, typer.Option(help="From cluster token create on a member.")],
    address: Annotated[
        str | None, typer.Option(help="Address this host's etcd member listens on.")
    ] = None,
    client_port: Annotated[int, typer.Option(help="etcd client port.")] = 2379,
    peer_port: Annotated[int, typer.Option(help="etcd peer port.")] = 2380,
    rename_suffix: Annotated[
        str | None,
        typer.Option(help="Bring stopped guests whose names the cluster has as NAME+SUFFIX."),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Join this single host to a cluster: its etcd member joins (certificate signed by
    the cluster CA, pinned like remote add), its guests move into the cluster when their
    names are free (else refused, naming them, before anything changes; with
    --rename-suffix stopped ones come in renamed), and the daemon restarts on etcd.
    Admin only."""
    body: dict[str, Any] = {"url": url, "token": token, "client_port": client_port}
    body["peer_port"] = peer_port
    if address is not None:
        body["address"] = address
    if rename_suffix is not None:
        body["rename_suffix"] = rename_suffix
    done = get_client().cluster_join(**body)
    if json_out:
        output.print_json(done)
        return
    output.fields(
        [
            ("etcd member", f"{done.member} at {done.client_url}"),
            ("instances brought in", ", ".join(done.instances) or "none"),
            ("renamed", ", ".join(f"{a} -> {b}" for a, b in done.renamed.items()) or "none"),
            ("SQLite backup", done.backup),
            ("daemon", "restarting on etcd" if done.restarting else "restart it to use etcd"),
        ]
    )


@command(app, "leave")
def leave(json_out: JsonOpt = False) -> None:
    """Take this host out of its cluster (refused while it owns instances, naming them):
    its etcd member and host record leave, and the daemon restarts as a single host on a
    fresh SQLite file (the old one kept aside). Admin only."""
    done = get_client().cluster_leave()
    if json_out:
        output.print_json(done)
        return
    output.fields(
        [
            ("left", f"etcd member {done.member} removed"),
            ("old SQLite file", done.kept),
            ("daemon", "restarting as a single host" if done.restarting else "restart it"),
        ]
    )


@command(app, "remove")
def remove(
    host: Annotated[str, typer.Argument(help="The host's name or id.")],
    force: Annotated[bool, typer.Option("--force", help="Required: the host is gone.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Forget a host that is gone for good (its record and its etcd member). Refused
    for this host (use leave) and while the host is online. Admin only."""
    done = get_client().cluster_remove_host(host, force=force)
    if json_out:
        output.print_json(done)
        return
    output.fields(
        [
            ("removed", f"{done.name} ({done.host_id})"),
            ("etcd member", "removed" if done.etcd_member_removed else "none by that name"),
            ("orphaned", ", ".join(done.orphaned)),
        ]
    )


tokens = typer.Typer(help="One-time join tokens for cluster join.", no_args_is_help=True)
app.add_typer(tokens, name="token")


@command(tokens, "create")
def token_create(
    ttl: Annotated[str, typer.Option(help="How long it stays valid (60s to 7d).")] = "1h",
    json_out: JsonOpt = False,
) -> None:
    """Print a one-time join token (shown once): it carries this member's API URL and the
    fingerprints of the cluster CA and the API's certificate. Admin only."""
    try:
        ttl_s = parse_duration_s(ttl)
    except ValueError as err:
        raise typer.BadParameter(str(err), param_hint="--ttl") from None
    made = get_client().cluster_token_create(ttl_s)
    if json_out:
        output.print_json(made)
        return
    output.fields(
        [
            ("token", made.token),
            ("expires", made.expires_at.isoformat(timespec="seconds")),
            ("join through", made.api_url),
            ("cluster CA", made.ca_fingerprint),
        ]
    )


def _member_row(m: StoreMember) -> list[Any]:
    if m.error is not None:
        return [m.name, ", ".join(m.client_urls), "-", "-", "-", f"unreachable: {m.error}"]
    size = format_bytes(m.db_size_bytes or 0)
    leader = "yes" if m.leader else "no"
    return [m.name, ", ".join(m.client_urls), leader, size, m.raft_index, m.version]


def _host_row(h: ClusterHost) -> list[Any]:
    age = f"{h.lease_age_s:.0f} s" if h.lease_age_s is not None else "-"
    return [h.name, h.id, h.state.value, age, h.api_url or "-", "this host" if h.this_host else ""]
