"""``virtfleet vm ...``: create, list, show, power actions, delete, logs, console, screenshot.

The kind-neutral commands here (list, show, power, delete, logs, console) serve
VMs and containers alike; ``cli/instances.py`` also puts them at the top level
(``virtfleet start NAME``). Owns turning arguments into client calls and results
into tables or JSON. Must not decide anything the API decides (state rules,
validation beyond sizes).
"""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from virtfleet.cli import output, snapshots, vmset
from virtfleet.cli.context import JsonOpt, NoWaitOpt, command, get_client, invalid
from virtfleet.cli.disks import ReuseDisksOpt
from virtfleet.cli.hostopt import HostOpt
from virtfleet.cli.hostpower import (
    AutostartOpt,
    HostShutdownOpt,
    StartDelayOpt,
    StartOrderOpt,
    policy_fields,
)
from virtfleet.cli.images import host_path
from virtfleet.cli.sizes import format_mib, parse_disk, parse_size_mib
from virtfleet.cli.vmset import (
    FirmwareOpt,
    MaxMemoryOpt,
    MaxVcpusOpt,
    MinMemoryOpt,
    TpmOpt,
    create_bounds,
    resource_rows,
)
from virtfleet.client import calls, imaging
from virtfleet.client.calls import Action
from virtfleet.client.errors import ApiError
from virtfleet.model.enums import Accel, DeviceModel, Firmware, GuestOs, RestartPolicy

if TYPE_CHECKING:
    from virtfleet.client import Instance
    from virtfleet.model.guest import GuestInfo
    from virtfleet.model.instance import NicSpec

app = typer.Typer(help="Virtual machines.", no_args_is_help=True)
NameArg = Annotated[
    str, typer.Argument(help="Instance name (VM or container).", show_default=False)
]
ForceOpt = Annotated[bool, typer.Option("--force", help="Hard stop / hard reset.")]
TimeoutOpt = Annotated[float, typer.Option("--timeout", help="Seconds to wait for a clean stop.")]
QUICK_WAIT_S = 2.0  # a power change that takes longer gets a progress bar


class Kind(StrEnum):
    VM = "vm"
    CONTAINER = "container"


class Nic(StrEnum):
    NONE = "none"
    USER = "user"


@command(app, "create")
def create(
    names: Annotated[
        list[str], typer.Argument(help="Name(s); web-{1..10} expands.", show_default=False)
    ],
    image: Annotated[str | None, typer.Option("--image", help="Base image.")] = None,
    template: Annotated[str | None, typer.Option("--from", help="Clone from a template.")] = None,
    full: Annotated[
        bool, typer.Option("--full/--linked", help="Full copy or linked clone.")
    ] = False,
    keep_tpm: Annotated[
        bool,
        typer.Option("--keep-tpm", help="With --from: keep the template's TPM (default: new)."),
    ] = False,
    count: Annotated[int | None, typer.Option("--count", help="NAME-1 .. NAME-N.")] = None,
    hostname: Annotated[str | None, typer.Option("--hostname", help="cloud-init hostname.")] = None,
    user_data: Annotated[
        Path | None, typer.Option("--user-data", help="cloud-init user-data.")
    ] = None,
    agent: Annotated[
        bool | None, typer.Option("--agent/--no-agent", help="Guest agent channel.")
    ] = None,
    vcpus: Annotated[int | None, typer.Option("--vcpus", help="Virtual CPUs [1].")] = None,
    memory: Annotated[
        str | None, typer.Option("--memory", help="e.g. 512M, 2G; plain = MiB [256M].")
    ] = None,
    max_memory: MaxMemoryOpt = None,
    min_memory: MinMemoryOpt = None,
    max_vcpus: MaxVcpusOpt = None,
    accel: Annotated[Accel | None, typer.Option("--accel", help="[auto]")] = None,
    device_model: Annotated[
        DeviceModel | None, typer.Option("--device-model", help="[virtio]")
    ] = None,
    firmware: FirmwareOpt = None,
    tpm: TpmOpt = None,
    guest_os: Annotated[
        GuestOs | None,
        typer.Option(
            "--os", help="windows: UEFI Secure Boot + TPM unless given, local-time RTC [linux]."
        ),
    ] = None,
    driver_iso: Annotated[
        Path | None,
        typer.Option(
            "--driver-iso",
            help="--os windows: an ISO of drivers (virtio-win) on a CD-ROM, a daemon host path.",
            show_default=False,
        ),
    ] = None,
    restart_policy: Annotated[
        RestartPolicy | None, typer.Option("--restart-policy", help="[no]")
    ] = None,
    nic: Annotated[
        Nic | None,
        typer.Option(
            "--nic",
            help="user: QEMU user networking (restricted); the default without --network.",
            show_default=False,
        ),
    ] = None,
    network: Annotated[
        list[str] | None,
        typer.Option(
            "--network",
            help="A NIC on this virtual network (repeatable; replaces "
            "the user-mode NIC unless --nic user is given too).",
        ),
    ] = None,
    nic_model: Annotated[
        str | None, typer.Option("--nic-model", help="virtio, e1000, vmxnet3 or rtl8139.")
    ] = None,
    autostart: AutostartOpt = None,
    start_order: StartOrderOpt = None,
    start_delay: StartDelayOpt = None,
    host_shutdown: HostShutdownOpt = None,
    disk: Annotated[
        list[str] | None,
        typer.Option(
            "--disk", help="NAME[:SIZE][@POOL], repeatable; the first holds --image [root]."
        ),
    ] = None,
    pool: Annotated[
        str | None, typer.Option("--pool", help="Storage pool of the disks [local].")
    ] = None,
    start: Annotated[bool, typer.Option("--start", help="Start it once created.")] = False,
    reuse_disks: ReuseDisksOpt = False,
    host: HostOpt = None,
    no_wait: NoWaitOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Create a VM from an image, or VMs from a template (--from; all or nothing).

    Options left out get the daemon's defaults (shown in brackets), or the template's.
    """
    settings: dict[str, Any] = {
        **create_bounds(max_memory, min_memory, max_vcpus),
        "cloud_init": _cloud_init(hostname, user_data),
        "guest_agent": agent,
        "vcpus": vcpus,
        "memory_mib": _memory_mib(memory),
        "accel": accel,
        "device_model": device_model,
        "firmware": firmware,
        "tpm": tpm,
        "os": guest_os,
        "driver_iso": str(driver_iso.absolute()) if driver_iso else None,
        "restart_policy": restart_policy,
        **_nics(nic, network or [], nic_model),
        **policy_fields(autostart, start_order, start_delay, host_shutdown),
    }
    settings = {k: v.value if isinstance(v, StrEnum) else v for k, v in settings.items()}
    settings = {k: v for k, v in settings.items() if v is not None}
    if template is not None:
        if reuse_disks:
            raise invalid("--reuse-disks is for --image: a clone makes its own disk")
        if driver_iso:
            raise invalid("--driver-iso is for --image: a clone installs nothing")
        if host:
            raise invalid("--host is for --image: a clone goes where its template's disk is")
        if keep_tpm:
            settings["keep_tpm"] = True
        if pool:
            settings["pool"] = pool
        _clone(template, names, count, full, start, settings, no_wait=no_wait, json_out=json_out)
        return
    if keep_tpm:
        raise invalid("--keep-tpm is for --from: only a clone has a TPM to keep")
    if image is None or len(names) != 1 or count is not None:
        raise invalid("give one NAME and --image, or --from TEMPLATE for several")
    name = names[0]
    client = get_client()
    body: dict[str, Any] = {"name": name, "image": image, **settings}
    body.update({"host": host} if host else {})
    if disk or pool:
        body["disks"] = _disks(disk or ["root"], image, pool)
    op = client.create_instance(body, start=start, reuse_disks=reuse_disks)
    label = f"creating {name}" + (" and starting it" if start else "")
    if output.run_operation(client, op, label, as_json=json_out, no_wait=no_wait):
        output.done(f"{name} created" + (" and started" if start else ""), json_out)


def _disks(texts: list[str], image: str, pool: str | None) -> list[dict[str, object]]:
    """``--disk`` options as API disks; the first is the image's (grown to its size);
    ``pool``: where those naming none live."""
    try:
        disks = [parse_disk(t) for t in texts]
    except ValueError as err:
        raise invalid(f"--disk: {err}") from err
    disks = [{"pool": pool, **d} if pool else d for d in disks]
    disks[0] = {**disks[0], "image": image, "boot": True}
    return disks


def _memory_mib(memory: str | None) -> int | None:
    try:
        return None if memory is None else parse_size_mib(memory)
    except ValueError as err:
        raise invalid(f"--memory: {err}") from err


def _nics(nic: Nic | None, networks: list[str], model: str | None) -> dict[str, Any]:
    """The ``nics`` field, or nothing when no NIC option was given: the daemon's default
    (one restricted user-mode NIC, model.defaults) applies then."""
    if nic is None and not networks and not model:
        return {}
    extra = {"model": model} if model else {}
    nics: list[Any] = [{"mode": "network", "network": n, **extra} for n in networks]
    if nic is Nic.USER or (nic is None and not networks):
        nics.insert(0, {"mode": "user", **extra})
    return {"nics": nics}


def _cloud_init(hostname: str | None, user_data: Path | None) -> dict[str, Any] | None:
    cloud: dict[str, Any] = {}
    if hostname:
        cloud["hostname"] = hostname
    if user_data is not None:
        try:
            cloud["user_data"] = user_data.read_text()
        except OSError as err:
            raise invalid(f"--user-data: {err}") from err
    return cloud or None


def _clone(
    template: str, names: list[str], count: int | None, full: bool, start: bool,
    settings: dict[str, Any], *, no_wait: bool, json_out: bool,
) -> None:  # fmt: skip
    client = get_client()
    mode = "full" if full else "linked"
    call = imaging.clone_template(template, names, count=count, clone=mode, start=start, **settings)
    op = client.call(call)
    label = f"creating {mode} clones of {template}"
    done = output.run_operation(client, op, label, as_json=json_out, no_wait=no_wait)
    if done is not None:
        made = ", ".join(done.result.get("instances", []))
        output.done(f"created {made}" + (" and started them" if start else ""), json_out)


@command(app, "export")
def export(
    name: NameArg,
    path: Annotated[
        str,
        typer.Argument(
            help="New file: any path locally; for a remote, in its export directory.",
            show_default=False,
        ),
    ],
    disk: Annotated[str | None, typer.Option("--disk", help="Export this disk only.")] = None,
    fmt: Annotated[str, typer.Option("--format", help="With --disk: qcow2, raw, vmdk.")] = "qcow2",
    no_wait: NoWaitOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Export a stopped VM as an OVA package, or with --disk one disk as qcow2/raw/vmdk."""
    client = get_client()
    target = host_path(path)
    call = (
        imaging.export_disk(name, disk, target, fmt) if disk else imaging.export_ova(name, target)
    )
    op = client.call(call)
    if output.run_operation(client, op, f"exporting {name}", as_json=json_out, no_wait=no_wait):
        output.done(f"{name} exported to {path}", json_out)


@command(app, "list")
def list_(
    kind: Annotated[
        Kind | None, typer.Option("--kind", help="Only VMs or only containers.")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """List instances (VMs and containers): kind, state, mode (kvm/tcg), size, devices, image."""
    # The table asks only for what it shows (--json: whole instances).
    fields = None if json_out else ("name", "spec", "status", "mode")
    instances = [i for i in get_client().list_instances(fields) if kind in (None, i.spec.kind)]
    if json_out:
        output.print_json(instances)
        return
    output.table(
        ["NAME", "KIND", "STATE", "MODE", "VCPUS", "MEMORY", "DEVICES", "IMAGE"],
        [_row(i) for i in instances],
    )


def _row(i: Instance) -> list[Any]:
    vm = i.spec.kind == "vm"
    return [
        i.name,
        i.spec.kind,
        _state(i),
        i.mode if vm else "-",
        i.spec.vcpus,
        format_mib(i.spec.memory_mib),
        i.spec.device_model.value if vm else "-",
        i.spec.image or "-",
    ]


def _state(i: Instance) -> str:
    return i.status.power.value + (" (error)" if i.status.error_code else "")


@command(app, "show")
def show(name: NameArg, json_out: JsonOpt = False) -> None:
    """Show one instance (VM or container) in detail."""
    client = get_client()
    i = client.get_instance(name)
    guest = client.call(imaging.guest_info(name)) if i.spec.guest_agent else None
    if json_out:
        output.print_json({**i.model_dump(mode="json"), "guest": guest} if guest else i)
        return
    s, st, vm = i.spec, i.status, i.spec.kind == "vm"
    error = f"{st.error_message} [{st.error_code}]" if st.error_code else None
    output.fields(
        [
            ("name", i.name),
            ("kind", s.kind),
            ("state", _state(i)),
            ("mode", i.mode if vm else None),
            ("accel reason", st.accel_reason),
            *resource_rows(i, {}),
            ("devices", f"{s.device_model.value} (machine {s.machine})" if vm else None),
            ("firmware", _FIRMWARE[s.firmware] if vm else None),
            ("tpm", ("TPM 2.0 (swtpm)" if s.tpm else "none") if vm else None),
            ("os", s.os.value if vm else None),
            ("driver iso", s.driver_iso),
            ("image", s.image),
            ("nics", ", ".join(map(_nic_text, s.nic_names, s.nics)) or "none"),
            ("addresses", ", ".join(f"{a.ip} ({a.network})" for a in i.addresses) or "-"),
            ("restart policy", s.restart_policy.value),
            ("owner", _owner_text(client, i)),
            ("pid", st.pid),
            ("started", st.started_at),
            ("restarts", st.restarts),
            ("exit code", st.exit_code),
            ("qemu", st.qemu_version if vm else None),
            ("reason", st.reason),
            ("error", error),
            (
                "desired",
                f"{i.desired.power.value} (generation {i.desired.generation}, "
                f"observed {st.observed_generation})",
            ),
            *_guest_fields(guest),
        ]
    )


_FIRMWARE = {
    Firmware.BIOS: "bios (SeaBIOS)",
    Firmware.UEFI: "uefi (OVMF)",
    Firmware.UEFI_SECURE: "uefi-secure (OVMF, Secure Boot, Microsoft keys)",
}


def _owner_text(client: Any, i: Instance) -> str | None:
    """The owning host's name and id, with the ownership epoch."""
    if i.owner is None:
        return None
    try:
        name = client.get_host(i.owner.host).name
    except ApiError:
        name = "unknown host"
    return f"{name} ({i.owner.host}, epoch {i.owner.epoch})"


def _guest_fields(guest: GuestInfo | None) -> list[tuple[str, Any]]:
    if guest is None:
        return []
    if not guest.agent:
        return [("guest agent", f"no answer ({guest.error})")]
    nics = "; ".join(f"{n.name} {' '.join(n.addresses)}".strip() for n in guest.interfaces)
    return [
        ("guest agent", "ping ok"),
        ("guest os", f"{guest.os_name} (kernel {guest.kernel})"),
        ("guest hostname", guest.hostname),
        ("guest interfaces", nics),
    ]


def _power(
    name: str,
    action: Action,
    label: str,
    *,
    force: bool = False,
    timeout_s: float = 30.0,
    no_wait: bool,
    json_out: bool,
) -> None:
    client = get_client()
    # One request: the daemon answers when the change is done (a bar after QUICK_WAIT_S).
    wait_s = 0.0 if no_wait else QUICK_WAIT_S
    call = calls.change_state(name, action, force, timeout_s, wait_s)
    op = output.finish(client, call, f"{label} {name}", as_json=json_out, no_wait=no_wait)
    if op is not None and not json_out:
        power = (op.get("result") or {}).get("power") or client.get_instance(name).status.power
        output.done(f"{name} is {power}", json_out)


@command(app, "start")
def start(name: NameArg, no_wait: NoWaitOpt = False, json_out: JsonOpt = False) -> None:
    """Start a stopped instance."""
    _power(name, "start", "starting", no_wait=no_wait, json_out=json_out)


@command(app, "stop")
def stop(
    name: NameArg,
    force: ForceOpt = False,
    timeout: TimeoutOpt = 30.0,
    no_wait: NoWaitOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Stop an instance cleanly, then hard after --timeout (at once with --force).

    A VM gets the ACPI button (or its guest agent's shutdown), a container's init SIGTERM.
    """
    _power(
        name, "stop", "stopping", force=force, timeout_s=timeout, no_wait=no_wait, json_out=json_out
    )


@command(app, "reboot")
def reboot(
    name: NameArg, force: ForceOpt = False, no_wait: NoWaitOpt = False, json_out: JsonOpt = False
) -> None:
    """Restart an instance (stop + start; --force = hard reset)."""
    _power(name, "restart", "rebooting", force=force, no_wait=no_wait, json_out=json_out)


@command(app, "pause")
def pause(name: NameArg, no_wait: NoWaitOpt = False, json_out: JsonOpt = False) -> None:
    """Pause a running instance (its CPUs stop, a container is frozen; memory is kept)."""
    _power(name, "pause", "pausing", no_wait=no_wait, json_out=json_out)


@command(app, "resume")
def resume(name: NameArg, no_wait: NoWaitOpt = False, json_out: JsonOpt = False) -> None:
    """Resume a paused instance."""
    _power(name, "resume", "resuming", no_wait=no_wait, json_out=json_out)


@command(app, "delete")
def delete(
    name: NameArg,
    force: Annotated[bool, typer.Option("--force", help="Stop it first if it runs.")] = False,
    disks: Annotated[bool, typer.Option("--disks", help="Also delete its disks.")] = False,
    no_wait: NoWaitOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Delete an instance (a missing one is not an error)."""
    client = get_client()
    op = client.delete_instance(name, force=force, disks=disks)
    final = output.run_operation(client, op, f"deleting {name}", as_json=json_out, no_wait=no_wait)
    if final:
        gone = final.result.get("deleted", True)
        output.done(f"{name} deleted" if gone else f"{name} did not exist", json_out)


@command(app, "logs")
def logs(
    name: NameArg,
    tail: Annotated[int, typer.Option("--tail", help="Bytes from the end.")] = 64 * 1024,
    json_out: JsonOpt = False,
) -> None:
    """Print the instance's console log (a VM's serial console, a container init's output)."""
    text = get_client().instance_log(name, tail)
    if json_out:
        output.print_json({"name": name, "log": text})
    else:
        sys.stdout.write(text)


@command(app, "screenshot")
def screenshot(
    name: NameArg,
    out: Annotated[Path, typer.Option("-o", "--output", help="PNG file to write.")],
    json_out: JsonOpt = False,
) -> None:
    """Save a PNG screenshot of the VM's screen."""
    png = get_client().screenshot(name)
    out.write_bytes(png)
    if json_out:
        output.print_json({"name": name, "path": str(out.resolve()), "size_bytes": len(png)})
    else:
        output.done(f"screenshot of {name} saved to {out} ({len(png)} bytes)", False)


@command(app, "console")
def console(name: NameArg, json_out: JsonOpt = False) -> None:
    """Attach to the instance's console (a VM's serial console; detach with Ctrl-])."""
    from virtfleet.cli.console import attach

    if json_out:
        raise invalid("console is interactive; --json is not supported")
    attach(get_client(), name)


def _nic_text(name: str, nic: NicSpec) -> str:
    where = f"{name}: network {nic.network}" if nic.mode == "network" else f"{name}: {nic.mode}"
    return f"{where} {nic.mac}" if nic.mac else where


app.add_typer(snapshots.app, name="snapshot")
vmset.install(app)
