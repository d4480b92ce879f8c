"""``virtfleet host ...``, ``operation ...`` and ``events``: inspection commands.

Owns arguments -> client calls -> tables/JSON for the host, operations and the
event log (``events --follow`` streams over the events websocket). Must not
change anything but cancelling an operation.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Annotated, Any

import typer

from virtfleet.cli import hostpower, output
from virtfleet.cli.context import JsonOpt, command, get_client
from virtfleet.cli.sizes import format_mib
from virtfleet.cli.vmset import host_capacity
from virtfleet.client import WsTarget, raise_for_operation
from virtfleet.model.event import Event
from virtfleet.model.host import HostRecord
from virtfleet.model.operation import Operation

host_app = typer.Typer(
    help="This host's virtualization facts, and the platform's hosts.", no_args_is_help=True
)
op_app = typer.Typer(help="Operations (slow work: start, stop, builds...).", no_args_is_help=True)
IdArg = Annotated[str, typer.Argument(help="Operation id.", show_default=False)]


@command(host_app, "check")
def host_check(json_out: JsonOpt = False) -> None:
    """Check whether this host can run VMs, and how (KVM or TCG)."""
    client = get_client()
    facts, checks = client.host(), client.host_check()
    if json_out:
        output.print_json({"facts": facts, "checks": checks})
        return
    output.fields(
        [
            ("host", facts.hostname),
            ("mode", facts.default_accel),
            ("kvm", facts.kvm.reason or ("usable" if facts.kvm.usable else "unusable")),
            ("qemu", facts.qemu_version),
            ("cpus", facts.cpus),
            ("memory", format_mib(facts.memory_mib)),
            ("recommendation", facts.recommendation),
        ]
    )
    output.table(["LEVEL", "CHECK", "DETAIL"], [[c.level, c.name, c.detail] for c in checks])


@command(host_app, "list")
def host_list(json_out: JsonOpt = False) -> None:
    """List the platform's hosts: id, name, state (offline once its lease lapsed), API URL."""
    hosts = get_client().list_hosts()
    if json_out:
        output.print_json(hosts)
        return
    output.table(["NAME", "ID", "STATE", "CPUS", "MEMORY", "QEMU", "API"], map(_host_row, hosts))


def _host_row(h: HostRecord) -> list[Any]:
    memory = format_mib(h.capacity.memory_mib)
    qemu, api = h.facts.qemu_version or "-", h.api_url or "-"
    return [h.name, h.id, h.state.value, h.capacity.cpus, memory, qemu, api]


@command(host_app, "show")
def host_show(
    name: Annotated[
        str | None, typer.Argument(help="A host's name or id (default: this host's probed facts).")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Show every probed fact of this host, or one host's record (with NAME)."""
    client = get_client()
    shown = client.get_host(name) if name is not None else client.host()
    if json_out:
        output.print_json(shown)
        return
    output.fields(shown.model_dump(mode="json").items())


def _op_rows(ops: list[Operation]) -> list[list[Any]]:
    return [
        [
            o.id,
            o.kind,
            o.target,
            o.status.value,
            f"{o.progress}%",
            o.created_at.strftime("%H:%M:%S"),
            o.error_message or o.message,
        ]
        for o in ops
    ]


@command(op_app, "list")
def op_list(json_out: JsonOpt = False) -> None:
    """List operations, oldest first."""
    ops = get_client().list_operations()
    if json_out:
        output.print_json(ops)
        return
    output.table(
        ["ID", "KIND", "TARGET", "STATUS", "PROGRESS", "CREATED", "MESSAGE"], _op_rows(ops)
    )


@command(op_app, "show")
def op_show(op_id: IdArg, json_out: JsonOpt = False) -> None:
    """Show one operation."""
    op = get_client().get_operation(op_id)
    if json_out:
        output.print_json(op)
        return
    output.fields(op.model_dump(mode="json").items())


@command(op_app, "wait")
def op_wait(
    op_id: IdArg,
    timeout: Annotated[
        float | None, typer.Option("--timeout", help="Give up after seconds.")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Wait for an operation to finish; fail if it failed."""
    op = get_client().wait_operation(op_id, timeout_s=timeout)
    if json_out:
        output.print_json(op)
    raise_for_operation(op)
    output.done(f"operation {op.id} {op.status.value}", json_out)


@command(op_app, "cancel")
def op_cancel(op_id: IdArg, json_out: JsonOpt = False) -> None:
    """Cancel a pending or running operation."""
    op = get_client().cancel_operation(op_id)
    if json_out:
        output.print_json(op)
    output.done(f"operation {op.id} {op.status.value}", json_out)


def _event_line(e: Event) -> str:
    return (
        f"{e.revision or '-':>8} {e.time:%Y-%m-%d %H:%M:%S} {e.kind:<22} {e.target:<20} {e.message}"
    )


def events(
    after: Annotated[int | None, typer.Option("--after", help="Only after this revision.")] = None,
    limit: Annotated[int, typer.Option("--limit", help="At most this many.")] = 100,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Stream new events.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Show recent events; with --follow keep streaming new ones (Ctrl-C stops)."""
    client = get_client()
    past = client.list_events(after=after, limit=limit)
    for event in past:
        print(event.model_dump_json() if json_out else _event_line(event))
    if follow:
        last = past[-1].revision if past else after
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_follow(client.websocket("/1.0/events"), last, json_out))


async def _follow(target: WsTarget, after: int | None, json_out: bool) -> None:
    from websockets.exceptions import InvalidHandshake

    try:
        async with target.connect(f"after={after}" if after is not None else "") as ws:
            async for message in ws:
                event = Event.model_validate_json(message)
                print(event.model_dump_json() if json_out else _event_line(event), flush=True)
    except (OSError, InvalidHandshake) as err:
        raise target.error(err) from err


command(host_app, "capacity")(host_capacity)  # after host's own commands in its --help
hostpower.install(host_app)
