"""``virtfleet vm set``: change a VM's resources, live where it can; ``host capacity``.

Owns turning the resource flags into one ``ResourcePatch`` body (sizes as users
type them, ``50%`` CPU caps, ``DISK:SIZE`` pairs, ``none`` to lift a limit) and
rendering the answer: each change and whether it is live or waits for the next
boot. Must not decide what is allowed: the API does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from virtfleet.cli import output
from virtfleet.cli.context import JsonOpt, NoWaitOpt, command, get_client, invalid
from virtfleet.cli.hostpower import (
    AutostartOpt,
    HostShutdownOpt,
    StartDelayOpt,
    StartOrderOpt,
    policy_fields,
)
from virtfleet.cli.sizes import format_mib, parse_disk, parse_size_mib
from virtfleet.client import resources as calls
from virtfleet.model.enums import Firmware, GuestOs

if TYPE_CHECKING:
    from virtfleet.client import Instance
    from virtfleet.model.capacity import Capacity

NameArg = Annotated[str, typer.Argument(help="Instance name.", show_default=False)]
NONE = "none"
MemoryOpt = Annotated[
    str | None, typer.Option("--memory", help="Memory now (balloon), e.g. 2G.", show_default=False)
]
MinMemoryOpt = Annotated[
    str | None,
    typer.Option("--min-memory", help="Balloon floor; none lifts it.", show_default=False),
]
MaxMemoryOpt = Annotated[
    str | None,
    typer.Option("--max-memory", help="Boot RAM (applies at the next boot).", show_default=False),
]
VcpusOpt = Annotated[
    int | None, typer.Option("--vcpus", help="vCPUs (hot-plugged up to max).", show_default=False)
]
MaxVcpusOpt = Annotated[
    int | None,
    typer.Option("--max-vcpus", help="maxcpus (applies at the next boot).", show_default=False),
]
FirmwareOpt = Annotated[
    Firmware | None,
    typer.Option("--firmware", help="bios, uefi or uefi-secure (q35 only) [bios]."),
]
TpmOpt = Annotated[
    bool | None, typer.Option("--tpm/--no-tpm", help="A TPM 2.0 (swtpm; needs UEFI) [no].")
]
OsOpt = Annotated[
    GuestOs | None,
    typer.Option("--os", help="windows, linux or other (stopped VMs only).", show_default=False),
]
CpuLimitOpt = Annotated[
    str | None,
    typer.Option(
        "--cpu-limit", help="CPU cap, 50% = half a core, 200% = two; none.", show_default=False
    ),
]
CpuWeightOpt = Annotated[
    str | None,
    typer.Option("--cpu-weight", help="Relative CPU share 1-10000; none.", show_default=False),
]
DiskAddOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--disk-add",
        help="NAME:SIZE[@POOL] (new volume) or NAME (existing one).",
        show_default=False,
    ),
]
DiskRemoveOpt = Annotated[
    list[str] | None, typer.Option("--disk-remove", help="Disk NAME.", show_default=False)
]
DiskGrowOpt = Annotated[
    list[str] | None,
    typer.Option("--disk-grow", help="NAME:SIZE (never smaller).", show_default=False),
]
IopsOpt = Annotated[
    list[str] | None,
    typer.Option("--iops", help="DISK:N, DISK:read=N,write=N or DISK:none.", show_default=False),
]
BpsOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--bps",
        help="DISK:10M (per second), DISK:read=..,write=.. or DISK:none.",
        show_default=False,
    ),
]
NicAddOpt = Annotated[
    list[str] | None,
    typer.Option("--nic-add", help="NIC name (user-mode, host unreachable).", show_default=False),
]
NicRemoveOpt = Annotated[
    list[str] | None, typer.Option("--nic-remove", help="NIC name.", show_default=False)
]


def install(vm_app: typer.Typer) -> None:
    """Register ``vm set`` and ``vm resources`` (``host capacity``: cli/misc.py)."""
    command(vm_app, "set")(set_)
    command(vm_app, "resources")(resources)


def set_(
    name: NameArg,
    memory: MemoryOpt = None,
    min_memory: MinMemoryOpt = None,
    max_memory: MaxMemoryOpt = None,
    vcpus: VcpusOpt = None,
    max_vcpus: MaxVcpusOpt = None,
    cpu_limit: CpuLimitOpt = None,
    cpu_weight: CpuWeightOpt = None,
    disk_add: DiskAddOpt = None,
    disk_remove: DiskRemoveOpt = None,
    disk_grow: DiskGrowOpt = None,
    iops: IopsOpt = None,
    bps: BpsOpt = None,
    nic_add: NicAddOpt = None,
    nic_remove: NicRemoveOpt = None,
    autostart: AutostartOpt = None,
    start_order: StartOrderOpt = None,
    start_delay: StartDelayOpt = None,
    host_shutdown: HostShutdownOpt = None,
    firmware: FirmwareOpt = None,
    tpm: TpmOpt = None,
    guest_os: OsOpt = None,
    no_wait: NoWaitOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Change memory, vCPUs, CPU/IO limits, disks and NICs (live where the VM allows),
    the start-at-boot and host-shutdown policy, the firmware and TPM (at the next boot),
    and the guest OS (stopped VMs only)."""
    body: dict[str, Any] = {}
    _sizes(body, memory=memory, min_memory=min_memory, max_memory=max_memory)
    _put(body, "vcpus", vcpus)
    _put(body, "max_vcpus", max_vcpus)
    if cpu_limit is not None:
        body["cpu_limit_pct"] = None if cpu_limit == NONE else _percent(cpu_limit)
    if cpu_weight is not None:
        body["cpu_weight"] = None if cpu_weight == NONE else _int(cpu_weight, "--cpu-weight")
    _disks(body, disk_add or [], disk_remove or [], disk_grow or [])
    client = get_client()
    if iops or bps:
        added = [d["name"] for d in body.get("disks_add", [])]  # limits may name them too
        body["disk_limits"] = _limits(client.get_instance(name), iops or [], bps or [], added)
    if nic_add:
        body["nics_add"] = [{"name": n} for n in nic_add]
    if nic_remove:
        body["nics_remove"] = list(nic_remove)
    body.update(policy_fields(autostart, start_order, start_delay, host_shutdown))
    if firmware is not None:
        body["firmware"] = firmware.value
    if tpm is not None:
        body["tpm"] = tpm
    if guest_os is not None:
        body["os"] = guest_os.value
    if not body:
        raise invalid("nothing to change: give at least one option (see --help)")
    op = client.call(calls.patch_instance(name, body))
    final = output.run_operation(client, op, f"changing {name}", as_json=json_out, no_wait=no_wait)
    if final is not None and not json_out:
        _render(final.result)


def create_bounds(
    max_memory: str | None, min_memory: str | None, max_vcpus: int | None
) -> dict[str, Any]:
    """``vm create``'s resource ranges: the balloon's bounds and maxcpus for hot-plug."""
    body: dict[str, Any] = {}
    _sizes(body, max_memory=max_memory, min_memory=min_memory)
    _put(body, "max_vcpus", max_vcpus)
    return {k: v for k, v in body.items() if v is not None}


def _render(result: dict[str, Any]) -> None:
    rows = [
        [c["target"], c["kind"], "live" if c["mode"] == "live" else "at next boot", c["reason"]]
        for c in result.get("changes", [])
    ]
    if rows:
        output.table(["FIELD", "CHANGE", "APPLIED", "WHY"], rows)
    else:
        print("nothing changed")


def _put(body: dict[str, Any], key: str, value: object) -> None:
    if value is not None:
        body[key] = value


def _sizes(body: dict[str, Any], **given: str | None) -> None:
    for flag, value in given.items():
        if value is None:
            continue
        key = f"{flag}_mib"
        body[key] = None if value == NONE and flag == "min_memory" else _mib(value, flag)


def _mib(text: str, flag: str) -> int:
    try:
        return parse_size_mib(text)
    except ValueError as err:
        raise invalid(f"--{flag.replace('_', '-')}: {err}") from err


def _percent(text: str) -> float:
    try:
        value = float(text.strip().removesuffix("%"))
    except ValueError as err:
        raise invalid(f"--cpu-limit: {text!r} is not a percentage like 50%") from err
    if value <= 0:
        raise invalid(f"--cpu-limit: must be above 0 %, got {text}")
    return value


def _int(text: str, flag: str) -> int:
    try:
        return int(text)
    except ValueError as err:
        raise invalid(f"{flag}: {text!r} is not a whole number") from err


def _pair(text: str, flag: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep or not name or not value:
        raise invalid(f"{flag}: expected NAME:VALUE, got {text!r}")
    return name, value


def _gib(text: str, flag: str) -> float:
    return _mib(text, flag.lstrip("-")) / 1024


def _disks(body: dict[str, Any], add: list[str], remove: list[str], grow: list[str]) -> None:
    try:
        disks = [parse_disk(item) for item in add]
    except ValueError as err:
        raise invalid(f"--disk-add: {err}") from err
    if disks:
        body["disks_add"] = disks
    if remove:
        body["disks_remove"] = list(remove)
    sizes = dict(_pair(item, "--disk-grow") for item in grow)
    if sizes:
        body["disk_sizes_gib"] = {n: _gib(s, "--disk-grow") for n, s in sizes.items()}


def _limits(inst: Instance, iops: list[str], bps: list[str], added: list[str]) -> dict[str, Any]:
    """Per disk (``added`` ones too), its current limits with the given kinds replaced (or
    lifted with none)."""
    current = {d.name: d.limits.model_dump() if d.limits else {} for d in inst.spec.disks}
    current.update({n: {} for n in added if n not in current})
    out: dict[str, dict[str, Any]] = {}
    for kind, items in (("iops", iops), ("bps", bps)):
        for item in items:
            disk, value = _pair(item, f"--{kind}")
            if disk not in current:
                raise invalid(f"--{kind}: {inst.name} has no disk {disk!r}")
            limits = out.setdefault(disk, dict(current[disk]))
            for key in ("total", "read", "write"):
                limits[f"{kind}_{key}"] = None
            if value != NONE:
                limits.update(_limit_values(kind, value))
    return {d: (v if any(x is not None for x in v.values()) else None) for d, v in out.items()}


def _limit_values(kind: str, value: str) -> dict[str, int]:
    flag = f"--{kind}"
    parts = dict(p.partition("=")[::2] for p in value.split(",")) if "=" in value else {}
    if not parts:
        return {f"{kind}_total": _amount(kind, value, flag)}
    unknown = set(parts) - {"read", "write"}
    if unknown:
        raise invalid(f"{flag}: unknown key(s) {', '.join(sorted(unknown))}; use read=, write=")
    return {f"{kind}_{k}": _amount(kind, v, flag) for k, v in parts.items()}


def _amount(kind: str, text: str, flag: str) -> int:
    """IOPS as a number; bandwidth as a size per second (10M = 10 MiB/s)."""
    text = text.removesuffix("/s")
    if kind == "iops" or not text[-1:].isalpha():
        value = _int(text, flag)  # IOPS, or bytes per second
    else:
        value = _mib(text, flag.lstrip("-")) * 2**20
    if value <= 0:
        raise invalid(f"{flag}: a limit must be above 0 (use none to lift it), got {text}")
    return value


def resources(name: NameArg, json_out: JsonOpt = False) -> None:
    """What runs now: live memory (balloon, guest statistics), vCPUs, pending changes."""
    client = get_client()
    live = client.call(calls.instance_resources(name))
    inst = client.get_instance(name)
    if json_out:
        output.print_json({**live, "pending": inst.pending})
        return
    output.fields(resource_rows(inst, live.get("live") or {}))


def resource_rows(inst: Instance, live: dict[str, Any]) -> list[tuple[str, Any]]:
    """Rows for ``vm show``/``vm resources``: wanted vs live, and what waits for a boot."""
    s, applied = inst.spec, inst.status.applied
    actual = live.get("balloon_actual_mib")
    rows: list[tuple[str, Any]] = [
        ("memory", f"{format_mib(s.memory_mib)} (range {format_mib(s.min_memory_mib or 0)}-"
                   f"{format_mib(s.boot_memory_mib)})"),
        ("memory live", format_mib(applied.memory_mib) if applied else "-"),
        ("balloon actual", format_mib(actual) if actual else None),
        ("vcpus", f"{s.vcpus} (max {s.max_vcpus or s.vcpus}, live {_live_vcpus(applied)})"),
        ("cpu limit", f"{s.cpu_limit_pct:g}%" if s.cpu_limit_pct else "none"),
        ("cpu weight", s.cpu_weight or "default"),
        ("disks", ", ".join(_disk(d) for d in s.disks) or "none"),
    ]  # fmt: skip
    stats = live.get("guest_stats") or {}
    if "stat-total-memory" in stats:
        free = stats.get("stat-free-memory", 0) // 2**20
        rows.append(("guest memory", f"{free} MiB free of {stats['stat-total-memory'] // 2**20}"))
    for change in inst.pending:
        when = "in progress" if change["mode"] == "live" else "at next boot"
        rows.append((f"pending {change['target']}", f"{change['kind']} ({when})"))
    return rows


def _live_vcpus(applied: Any) -> str:
    return str(applied.vcpus) if applied else "-"


def _disk(disk: Any) -> str:
    size = f" {disk.size_gib:g}G" if disk.size_gib else ""
    limits = disk.limits.model_dump(exclude_none=True) if disk.limits else {}
    extra = " [" + ", ".join(f"{k}={v}" for k, v in limits.items()) + "]" if limits else ""
    return f"{disk.name}{size}{extra}"


def capacity_rows(cap: Capacity) -> list[tuple[str, Any]]:
    used = cap.used
    return [
        ("cpus", f"{cap.cpus} x ratio {cap.ratios.cpu:g} = {cap.vcpus_limit} vCPUs"),
        ("vcpus allocated", f"{cap.allocated_vcpus} ({cap.available_vcpus} available)"),
        ("memory", f"{format_mib(cap.memory_mib)} x ratio {cap.ratios.memory:g} = "
                   f"{format_mib(cap.memory_limit_mib)}"),
        ("memory allocated", f"{format_mib(cap.allocated_memory_mib)} "
                             f"({format_mib(cap.available_memory_mib)} available)"),
        ("memory used", format_mib(used.memory_used_mib) if used else None),
        ("cpu load", f"{used.cpu_load_pct:g}%" if used else None),
        ("instances counted", cap.instances),
    ]  # fmt: skip


def host_capacity(json_out: JsonOpt = False) -> None:
    """This host's capacity: totals, overcommit limits, allocated and used."""
    cap = get_client().call(calls.host_capacity())
    if json_out:
        output.print_json(cap)
        return
    output.fields(capacity_rows(cap))
