"""``virtfleet storage pool|volume ...``: storage pools (create, list, show, delete) and
their volumes (list, show).

Owns arguments -> client calls -> tables/JSON for pools. Must not touch files.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from virtfleet.cli import output
from virtfleet.cli.context import JsonOpt, command, get_client

app = typer.Typer(help="Storage pools and their volumes.", no_args_is_help=True)
pool_app = typer.Typer(help="Storage pools: where disks live.", no_args_is_help=True)
volume_app = typer.Typer(help="Volumes (disks) in a pool.", no_args_is_help=True)
app.add_typer(pool_app, name="pool")
app.add_typer(volume_app, name="volume")
PoolArg = Annotated[str, typer.Argument(help="Pool name.")]
GIB = 1 << 30


def _gib(n: int) -> str:
    return f"{n / GIB:.1f}G"


@command(pool_app, "create")
def create(
    name: PoolArg,
    type_: Annotated[str, typer.Option("--type", help="dir or shared-dir.")],
    path: Annotated[str, typer.Option("--path", help="Absolute directory path.")],
    hosts: Annotated[
        list[str] | None, typer.Option("--host", help="A host that reaches it (default: all).")
    ] = None,
    overcommit: Annotated[
        float, typer.Option("--overcommit", help="Allocated may reach size x this.")
    ] = 1.0,
    json_out: JsonOpt = False,
) -> None:
    """Create a pool; a shared-dir pool is verified (marker, lock probe) first."""
    body: dict[str, Any] = {"name": name, "type": type_, "path": path, "overcommit": overcommit}
    if hosts:
        body["hosts"] = hosts
    pool = get_client().create_pool(body)
    if json_out:
        output.print_json(pool)
    else:
        output.done(f"storage pool {name} created ({pool.type}, {pool.health})", False)


@command(pool_app, "list")
def list_(json_out: JsonOpt = False) -> None:
    """List pools with capacity, health and capabilities."""
    pools = get_client().list_pools()
    if json_out:
        output.print_json(pools)
        return
    output.table(
        ["NAME", "TYPE", "HEALTH", "SIZE", "ALLOCATED", "USED", "OVERCOMMIT", "VOLUMES", "SHARED"],
        [
            [
                p.name,
                p.type,
                p.health,
                _gib(p.capacity.total_bytes),
                _gib(p.capacity.allocated_bytes),
                _gib(p.capacity.used_bytes),
                f"{p.capacity.overcommit:g}",
                str(p.volumes),
                "yes" if p.capabilities.shared else "no",
            ]
            for p in pools
        ],
    )


@command(pool_app, "show")
def show(name: PoolArg, json_out: JsonOpt = False) -> None:
    """Show one pool: where, capacity, capabilities and each host's check."""
    p = get_client().get_pool(name)
    if json_out:
        output.print_json(p)
        return
    caps = [k for k, v in p.capabilities.model_dump().items() if v]
    checks = "; ".join(
        f"{c.host}: {'ok' if c.reachable and c.marker_ok and c.lock_ok else c.message}"
        for c in p.checks
    )
    output.fields(
        [
            ("name", p.name),
            ("type", p.type),
            ("path", p.path or "(the data directory's disks)"),
            ("hosts", ", ".join(p.hosts) if p.hosts else "all"),
            ("health", p.health),
            ("size", _gib(p.capacity.total_bytes)),
            ("allocated", f"{_gib(p.capacity.allocated_bytes)} (x{p.capacity.overcommit:g})"),
            ("used", _gib(p.capacity.used_bytes)),
            ("capabilities", ", ".join(caps) or "-"),
            ("checks", checks or "-"),
            ("volumes", str(p.volumes)),
        ]
    )


@command(pool_app, "delete")
def delete(name: PoolArg, json_out: JsonOpt = False) -> None:
    """Delete a pool that holds no volumes."""
    deleted = get_client().delete_pool(name)
    if json_out:
        output.print_json({"name": name, "deleted": deleted})
    else:
        output.done(f"storage pool {name} deleted", False)


@command(volume_app, "list")
def volume_list(pool: PoolArg, json_out: JsonOpt = False) -> None:
    """List a pool's volumes (disks not made yet have no path)."""
    vols = get_client().list_volumes(pool)
    if json_out:
        output.print_json(vols)
        return
    output.table(
        ["NAME", "SIZE", "USED", "PATH"],
        [[v.name, _gib(v.size_bytes), _gib(v.allocated_bytes), v.path or "-"] for v in vols],
    )


@command(volume_app, "show")
def volume_show(
    pool: PoolArg,
    volume: Annotated[str, typer.Argument(help="INSTANCE/DISK.")],
    json_out: JsonOpt = False,
) -> None:
    """Show one volume."""
    v = get_client().get_volume(pool, volume)
    if json_out:
        output.print_json(v)
        return
    output.fields(
        [
            ("name", v.name),
            ("pool", v.pool),
            ("instance", v.instance),
            ("disk", v.disk),
            ("size", _gib(v.size_bytes)),
            ("used", _gib(v.allocated_bytes)),
            ("path", v.path or "- (made at first start)"),
        ]
    )
