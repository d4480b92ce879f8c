"""``virtfleet vm snapshot ...``: list, create, revert, delete snapshots of a VM.

Owns arguments -> snapshot calls -> tables/JSON/progress bars. Must not decide
anything the API decides (names, tree rules).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from virtfleet.cli import output
from virtfleet.cli.context import JsonOpt, NoWaitOpt, command, get_client
from virtfleet.client import backups as calls
from virtfleet.client.calls import Call

if TYPE_CHECKING:
    from virtfleet.model.operation import Operation

app = typer.Typer(help="Snapshots of a VM (a tree; live, no guest pause).", no_args_is_help=True)
VmArg = Annotated[str, typer.Argument(help="Instance name.", show_default=False)]
SnapArg = Annotated[str, typer.Argument(help="Snapshot name.", show_default=False)]


@command(app, "list")
def list_(vm: VmArg, json_out: JsonOpt = False) -> None:
    """List a VM's snapshots: parent, children, which one the disks sit on (current)."""
    snaps = get_client().call(calls.list_snapshots(vm))
    if json_out:
        output.print_json(snaps)
        return
    rows = [
        [
            ("* " if s.current else "  ") + s.name,
            s.parent or "-",
            ", ".join(s.children) or "-",
            s.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            "yes" if s.memory else "no",
        ]
        for s in snaps
    ]
    output.table(["NAME", "PARENT", "CHILDREN", "CREATED", "MEMORY"], rows)


def _run(vm: str, call: Call[Operation], label: str, msg: str, **kw: bool) -> None:
    client = get_client()
    op = client.call(call)
    if output.run_operation(client, op, label, as_json=kw["json_out"], no_wait=kw["no_wait"]):
        output.done(msg, kw["json_out"])


@command(app, "create")
def create(
    vm: VmArg,
    name: SnapArg,
    memory: Annotated[bool, typer.Option("--memory", help="Also RAM (running VMs).")] = False,
    no_wait: NoWaitOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Take a snapshot of every disk of a VM (running or stopped), optionally with memory."""
    label, msg = f"snapshotting {vm}", f"snapshot {name} of {vm} taken"
    call = calls.create_snapshot(vm, name, memory)
    _run(vm, call, label, msg, no_wait=no_wait, json_out=json_out)


@command(app, "revert")
def revert(vm: VmArg, name: SnapArg, no_wait: NoWaitOpt = False, json_out: JsonOpt = False) -> None:
    """Put the disks back to a snapshot (a running VM is restarted on them)."""
    label, msg = f"reverting {vm} to {name}", f"{vm} reverted to {name}"
    _run(vm, calls.revert_snapshot(vm, name), label, msg, no_wait=no_wait, json_out=json_out)


@command(app, "delete")
def delete(vm: VmArg, name: SnapArg, no_wait: NoWaitOpt = False, json_out: JsonOpt = False) -> None:
    """Delete a snapshot without children (its data is merged; the VM may run)."""
    label, msg = f"deleting snapshot {name} of {vm}", f"snapshot {name} of {vm} deleted"
    _run(vm, calls.delete_snapshot(vm, name), label, msg, no_wait=no_wait, json_out=json_out)
