"""``virtfleet container ...`` and ``virtfleet exec``: create containers, exec, limits, snapshots.

Power verbs, logs, the console, list and show are the instance verbs at the top
level (``virtfleet start c1``, cli/instances.py; ``virtfleet vm start c1`` too).
Owns turning arguments into client calls and results into text or JSON; decides
nothing the API decides.
"""

from __future__ import annotations

import shlex
import sys
from typing import Annotated, Any

import typer

from virtfleet.cli import output
from virtfleet.cli.context import JsonOpt, NoWaitOpt, command, get_client, invalid
from virtfleet.cli.disks import ReuseDisksOpt
from virtfleet.cli.hostopt import HostOpt
from virtfleet.cli.hostpower import AutostartOpt, StartDelayOpt, StartOrderOpt, policy_fields
from virtfleet.cli.sizes import format_mib, parse_size_mib
from virtfleet.client import container_calls as calls
from virtfleet.client.calls import as_raw
from virtfleet.model.enums import RestartPolicy

app = typer.Typer(
    help="OS-level system containers (power, logs, console: the top-level verbs).",
    no_args_is_help=True,
)
NameArg = Annotated[str, typer.Argument(help="Container name.", show_default=False)]
SnapArg = Annotated[str, typer.Argument(help="Snapshot name.", show_default=False)]


def _memory(text: str | None) -> int | None:
    try:
        return None if text is None else parse_size_mib(text)
    except ValueError as err:
        raise invalid(f"--memory: {err}") from err


@command(app, "create")
def create(
    name: NameArg,
    image: Annotated[str, typer.Option("--image", help="Container rootfs image.")] = "tiny",
    cpus: Annotated[int, typer.Option("--cpus", help="CPU limit in whole CPUs.")] = 1,
    memory: Annotated[str, typer.Option("--memory", help="Memory limit, e.g. 128M.")] = "256M",
    pids_max: Annotated[int | None, typer.Option("--pids-max", help="Max tasks.")] = None,
    restart_policy: Annotated[RestartPolicy, typer.Option("--restart-policy")] = RestartPolicy.NO,
    start: Annotated[bool, typer.Option("--start", help="Start it once created.")] = False,
    network: Annotated[
        list[str] | None,
        typer.Option("--network", help="A NIC (eth0, eth1...) on this network (repeatable)."),
    ] = None,
    mode: Annotated[
        str | None,
        typer.Option(
            "--mode",
            help="app (the image's command) or system (its init); "
            "default: app for imported OCI images, system otherwise.",
        ),
    ] = None,
    env: Annotated[
        list[str] | None,
        typer.Option("--env", help="KEY=VALUE for an app container's command (repeatable)."),
    ] = None,
    cmd: Annotated[
        str | None,
        typer.Option("--cmd", help="Replaces the image's cmd (shell-quoted words)."),
    ] = None,
    autostart: AutostartOpt = None,
    start_order: StartOrderOpt = None,
    start_delay: StartDelayOpt = None,
    reuse_disks: ReuseDisksOpt = False,
    host: HostOpt = None,
    no_wait: NoWaitOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Create a container from a rootfs image (`image build --builder container-*`) or an
    imported Docker/OCI image (`image import-oci`)."""
    spec: dict[str, Any] = {
        "name": name,
        "kind": "container",
        "image": image,
        "vcpus": cpus,
        "memory_mib": _memory(memory),
        "pids_max": pids_max,
        "restart_policy": restart_policy.value,
        "nics": [{"mode": "network", "network": n} for n in network or []],
        **policy_fields(autostart, start_order, start_delay),
    }
    if host:
        spec["host"] = host
    if mode is not None:
        spec["container_mode"] = mode
    if env:
        spec["env"] = env
    if cmd is not None:
        try:
            spec["cmd"] = shlex.split(cmd)
        except ValueError as err:
            raise invalid(f"--cmd: {err}") from err
    client = get_client()
    op = client.create_instance(spec, start=start, reuse_disks=reuse_disks)
    label = f"creating container {name}" + (" and starting it" if start else "")
    if output.run_operation(client, op, label, as_json=json_out, no_wait=no_wait):
        output.done(f"{name} created" + (" and started" if start else ""), json_out)


@command(app, "limits")
def limits(
    name: NameArg,
    cpus: Annotated[int | None, typer.Option("--cpus", help="CPU limit.")] = None,
    memory: Annotated[str | None, typer.Option("--memory", help="e.g. 256M.")] = None,
    pids_max: Annotated[int | None, typer.Option("--pids-max", help="Max tasks.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Change CPU / memory / pids limits (live if the container runs)."""
    changes = {"vcpus": cpus, "memory_mib": _memory(memory), "pids_max": pids_max}
    changes = {k: v for k, v in changes.items() if v is not None}
    if not changes:
        raise invalid("give at least one of --cpus, --memory, --pids-max")
    spec = get_client().call(calls.set_limits(name, changes))
    if json_out:
        output.print_json(spec)
        return
    pids = spec.pids_max if spec.pids_max is not None else "unlimited"
    mem = format_mib(spec.memory_mib)
    output.done(f"{name}: {spec.vcpus} CPU, {mem} memory, {pids} pids", False)


@command(app, "snapshot")
def snapshot(name: NameArg, snap: SnapArg, json_out: JsonOpt = False) -> None:
    """Snapshot a stopped container's root file system."""
    snaps = get_client().call(calls.create_snapshot(name, snap))
    if json_out:
        output.print_json({"name": name, "snapshots": snaps})
    else:
        output.done(f"{name}: snapshot {snap} taken", False)


@command(app, "snapshots")
def snapshots(name: NameArg, json_out: JsonOpt = False) -> None:
    """List a container's rootfs snapshots."""
    snaps = get_client().call(calls.list_snapshots(name))
    if json_out:
        output.print_json({"name": name, "snapshots": snaps})
    else:
        sys.stdout.write("".join(f"{s}\n" for s in snaps))


@command(app, "restore")
def restore(name: NameArg, snap: SnapArg, json_out: JsonOpt = False) -> None:
    """Restore a stopped container's root file system from a snapshot."""
    result = get_client().call(calls.restore_snapshot(name, snap))
    if json_out:
        output.print_json(result)
    else:
        output.done(f"{name}: rootfs restored from {snap}", False)


@command(app, "delete-snapshot")
def delete_snapshot(name: NameArg, snap: SnapArg, json_out: JsonOpt = False) -> None:
    """Delete one of a container's rootfs snapshots."""
    get_client().call(calls.delete_snapshot(name, snap))
    if json_out:
        output.print_json({"name": name, "deleted": snap})
    else:
        output.done(f"{name}: snapshot {snap} deleted", False)


def exec_cmd(
    name: NameArg,
    argv: Annotated[list[str], typer.Argument(help="Command and arguments (after --).")],
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds before it is killed.")] = 60,
    json_out: JsonOpt = False,
) -> None:
    """Run a command in a running container: `virtfleet exec NAME -- cmd args...`."""
    # One request; the answer is read as sent (no model to import for three fields).
    call = as_raw(calls.exec_in(name, argv, timeout))
    result: dict[str, Any] = get_client().call(call)
    if json_out:
        output.print_json(result)
    else:
        sys.stdout.write(result["stdout"])
        sys.stderr.write(result["stderr"])
    raise typer.Exit(int(result["exit_code"]))
