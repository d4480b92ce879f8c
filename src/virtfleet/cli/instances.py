"""``virtfleet snapshot ...``: snapshots of any instance, VM or container.

The group asks the daemon for the instance's kind and hands over to VM snapshots
(``cli/snapshots.py``, a disk tree) or container snapshots (``cli/containers.py``,
the stopped rootfs). The other instance verbs (``virtfleet start|stop|...|show NAME``)
are the kind-neutral commands of ``cli/vm.py`` (and ``exec``), listed at the top level
by main.py. Must not re-implement a command: each verb is the function the
kind-specific group runs.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import typer

from virtfleet.cli import containers, snapshots
from virtfleet.cli.context import command, get_client, invalid

snapshot_app = typer.Typer(
    help="Snapshots of any instance: a VM's disk tree (live) or a stopped container's rootfs.",
    no_args_is_help=True,
)


def by_kind(
    for_vm: Callable[..., None],
    for_container: Callable[..., None],
    doc: str,
    vm_only: tuple[str, ...] = (),
) -> Callable[..., None]:
    """A command with ``for_vm``'s arguments that runs ``for_container`` on a container.

    ``for_container`` gets as many leading arguments as it takes, and ``json_out``
    (``--no-wait`` is moot: its calls are quick); a ``vm_only`` option set for a
    container is invalid input.
    """
    params = list(inspect.signature(for_vm).parameters)
    leading = len(inspect.signature(for_container).parameters) - 1  # all but json_out

    @functools.wraps(for_vm)
    def run(**args: Any) -> None:
        name = args[params[0]]  # the instance: the first argument of every snapshot verb
        if get_client().get_instance(name).spec.kind != "container":
            return for_vm(**args)
        for option in vm_only:
            if args[option]:
                raise invalid(f"--{option} is for VMs: a container snapshot is its rootfs")
        return for_container(*(args[p] for p in params[:leading]), json_out=args["json_out"])

    run.__doc__ = doc
    return run


for _verb, _vm_fn, _ct_fn, _vm_only, _doc in (
    ("list", snapshots.list_, containers.snapshots, (),
     "List an instance's snapshots (a VM's with parent, children and memory)."),
    ("create", snapshots.create, containers.snapshot, ("memory",),
     "Take a snapshot: every disk of a VM (running or not), or a stopped container's rootfs."),
    ("revert", snapshots.revert, containers.restore, (),
     "Go back to a snapshot (a running VM restarts on it; a container must be stopped)."),
    ("delete", snapshots.delete, containers.delete_snapshot, (),
     "Delete a snapshot (a VM's must have no children; its data is merged)."),
):  # fmt: skip
    command(snapshot_app, _verb)(by_kind(_vm_fn, _ct_fn, _doc, _vm_only))
