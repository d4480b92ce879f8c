"""The one verb set for every instance: ``virtfleet start|stop|...|show NAME``, VM or container.

Owns putting the kind-neutral commands of ``cli/vm.py`` (and ``exec``) at the top
level, and the ``virtfleet snapshot ...`` group, which asks the daemon for the
instance's kind and hands over to VM snapshots (``cli/snapshots.py``, a disk tree)
or container snapshots (``cli/containers.py``, the stopped rootfs). Must not
re-implement a command: each verb is the function the kind-specific group runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import typer

from virtfleet.cli import containers, snapshots, vm
from virtfleet.cli.context import JsonOpt, NoWaitOpt, command, get_client, invalid
from virtfleet.cli.snapshots import MemoryOpt, SnapArg
from virtfleet.cli.vm import NameArg

# Registered in this order, so ``virtfleet --help`` lists them as the life of an instance.
VERBS: tuple[tuple[str, Callable[..., Any]], ...] = (
    ("list", vm.list_),
    ("show", vm.show),
    ("start", vm.start),
    ("stop", vm.stop),
    ("restart", vm.reboot),
    ("pause", vm.pause),
    ("resume", vm.resume),
    ("delete", vm.delete),
    ("console", vm.console),
    ("logs", vm.logs),
    ("exec", containers.exec_cmd),
)

snapshot_app = typer.Typer(
    help="Snapshots of any instance: a VM's disk tree (live) or a stopped container's rootfs.",
    no_args_is_help=True,
)


def install(app: typer.Typer) -> None:
    """Add the instance verbs and the ``snapshot`` group to the top-level ``app``."""
    for name, fn in VERBS:
        command(app, name)(fn)
    app.add_typer(snapshot_app, name="snapshot")


def _is_container(name: str) -> bool:
    return get_client().get_instance(name).spec.kind == "container"


@command(snapshot_app, "list")
def snapshot_list(name: NameArg, json_out: JsonOpt = False) -> None:
    """List an instance's snapshots (a VM's with parent, children and memory)."""
    if _is_container(name):
        containers.snapshots(name, json_out=json_out)
    else:
        snapshots.list_(name, json_out=json_out)


@command(snapshot_app, "create")
def snapshot_create(
    name: NameArg,
    snap: SnapArg,
    memory: MemoryOpt = False,
    no_wait: NoWaitOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Take a snapshot: every disk of a VM (running or not), or a stopped container's rootfs."""
    if not _is_container(name):
        snapshots.create(name, snap, memory=memory, no_wait=no_wait, json_out=json_out)
    elif memory:
        raise invalid("--memory is for VMs: a container snapshot is its stopped root file system")
    else:
        containers.snapshot(name, snap, json_out=json_out)  # quick: no operation to wait for


@command(snapshot_app, "revert")
def snapshot_revert(
    name: NameArg, snap: SnapArg, no_wait: NoWaitOpt = False, json_out: JsonOpt = False
) -> None:
    """Go back to a snapshot (a running VM restarts on it; a container must be stopped)."""
    if _is_container(name):
        containers.restore(name, snap, json_out=json_out)
    else:
        snapshots.revert(name, snap, no_wait=no_wait, json_out=json_out)


@command(snapshot_app, "delete")
def snapshot_delete(
    name: NameArg, snap: SnapArg, no_wait: NoWaitOpt = False, json_out: JsonOpt = False
) -> None:
    """Delete a snapshot (a VM's must have no children; its data is merged)."""
    if _is_container(name):
        containers.delete_snapshot(name, snap, json_out=json_out)
    else:
        snapshots.delete(name, snap, no_wait=no_wait, json_out=json_out)
