"""Resource changes of an instance: what differs between two specs and how it can be applied.

Owns the one rule table both the service (to answer a PATCH per field: live or
at the next boot) and the agent (to decide what to hot-plug) use, the
``ResourcePatch`` a client sends, and ``with_change`` that moves an applied
spec one change closer to the wanted one. Pure: no I/O, no QEMU.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from virtfleet.model.instance import (
    MAX_VCPUS,
    MIN_MEMORY_MIB,
    START_ORDER_MAX,
    DeviceModel,
    DiskLimits,
    DiskSpec,
    Firmware,
    GuestOs,
    InstanceSpec,
    NicSpec,
    Strict,
)

Mode = Literal["live", "next-boot"]
Kind = Literal["memory", "vcpus", "cpu", "disk-add", "disk-remove", "disk-grow", "disk-limits"]
KindAll = Kind | Literal["nic-add", "nic-remove", "other"]
# Fields whose difference is handled by a rule below; any other difference waits for a boot.
_HANDLED = {"memory_mib", "max_memory_mib", "min_memory_mib", "vcpus", "max_vcpus"}
_HANDLED |= {"cpu_limit_pct", "cpu_weight", "disks", "nics"}
# Start-at-boot and host-shutdown policy: read by the daemon, never applied to a process.
POLICY = {"autostart", "start_order", "start_delay_s", "host_shutdown"}
MemoryMib = Annotated[int, Field(ge=MIN_MEMORY_MIB, le=16 * 1024 * 1024)]


class Change(BaseModel):
    """One difference between the applied and the wanted spec."""

    kind: KindAll
    target: str  # the field, or the disk / NIC name
    mode: Mode
    old: Any = None
    new: Any = None
    reason: str = ""  # why it waits for a boot


class ResourcePatch(Strict):
    """A change of a VM's resources (PATCH /1.0/instances/{name}); absent = unchanged.

    For the nullable limits an explicit ``null`` removes the limit.
    """

    memory_mib: MemoryMib | None = None
    min_memory_mib: MemoryMib | None = None
    max_memory_mib: MemoryMib | None = None
    vcpus: Annotated[int, Field(ge=1, le=MAX_VCPUS)] | None = None
    max_vcpus: Annotated[int, Field(ge=1, le=MAX_VCPUS)] | None = None
    cpu_limit_pct: Annotated[float, Field(gt=0, le=100 * MAX_VCPUS)] | None = None
    cpu_weight: Annotated[int, Field(ge=1, le=10000)] | None = None
    disks_add: list[DiskSpec] = Field(default_factory=list, max_length=16)
    disks_remove: list[str] = Field(default_factory=list, max_length=16)
    disk_sizes_gib: dict[str, Annotated[float, Field(gt=0, le=65536)]] = Field(default_factory=dict)
    disk_limits: dict[str, DiskLimits | None] = Field(default_factory=dict)
    nics_add: list[NicSpec] = Field(default_factory=list, max_length=8)
    nics_remove: list[str] = Field(default_factory=list, max_length=8)
    autostart: bool | None = None
    start_order: Annotated[int, Field(ge=0, le=START_ORDER_MAX)] | None = None
    start_delay_s: Annotated[float, Field(ge=0, le=3600)] | None = None
    host_shutdown: Literal["stop", "suspend"] | None = None
    firmware: Firmware | None = None  # at the next boot
    tpm: bool | None = None  # at the next boot
    # Stopped VMs only: the guest's clock and enlightenments follow it (its firmware and
    # TPM do not: those defaults are a new VM's, set them with firmware/tpm).
    os: GuestOs | None = None

    def is_empty(self) -> bool:
        return not self.model_fields_set


def changes(applied: InstanceSpec, wanted: InstanceSpec) -> list[Change]:
    """Every difference from ``applied`` (what runs) to ``wanted``, each with its mode."""
    out: list[Change] = []
    out += _memory(applied, wanted)
    out += _cpus(applied, wanted)
    out += _disks(applied, wanted)
    out += _nics(applied, wanted)
    rest = set(InstanceSpec.model_fields) - _HANDLED - POLICY
    old, new = applied.model_dump(include=rest), wanted.model_dump(include=rest)
    for name in sorted(k for k in rest if old[k] != new[k]):
        out.append(Change(kind="other", target=name, mode="next-boot", old=old[name],
                          new=new[name]))  # fmt: skip
    return out


def pending(applied: InstanceSpec | None, wanted: InstanceSpec) -> list[Change]:
    """What the running instance does not have yet (empty while stopped)."""
    return [] if applied is None else changes(applied, wanted)


def _virtio(spec: InstanceSpec) -> str:
    """Empty if the VM can hot-plug virtio devices, else the reason it cannot."""
    if spec.device_model is DeviceModel.VIRTIO:
        return ""
    return "the emulated device model has no virtio balloon or PCIe hot-plug"


def _memory(applied: InstanceSpec, wanted: InstanceSpec) -> list[Change]:
    out = []
    if wanted.memory_mib != applied.memory_mib:
        why = _virtio(applied)
        if not why and wanted.memory_mib > applied.boot_memory_mib:
            why = f"above the {applied.boot_memory_mib} MiB the VM was booted with"
        mode: Mode = "next-boot" if why else "live"
        out.append(Change(kind="memory", target="memory_mib", mode=mode, reason=why,
                          old=applied.memory_mib, new=wanted.memory_mib))  # fmt: skip
    if wanted.boot_memory_mib != applied.boot_memory_mib:
        out.append(Change(kind="memory", target="max_memory_mib", mode="next-boot",
                          old=applied.boot_memory_mib, new=wanted.boot_memory_mib,
                          reason="QEMU's RAM size is fixed at boot"))  # fmt: skip
    if wanted.min_memory_mib != applied.min_memory_mib:
        out.append(Change(kind="memory", target="min_memory_mib", mode="live",
                          old=applied.min_memory_mib, new=wanted.min_memory_mib))  # fmt: skip
    return out


def _cpus(applied: InstanceSpec, wanted: InstanceSpec) -> list[Change]:
    out = []
    top = applied.max_vcpus or applied.vcpus
    if wanted.vcpus != applied.vcpus:
        why = f"above the VM's maxcpus {top}" if wanted.vcpus > top else ""
        out.append(Change(kind="vcpus", target="vcpus", mode="next-boot" if why else "live",
                          old=applied.vcpus, new=wanted.vcpus, reason=why))  # fmt: skip
    if (wanted.max_vcpus or wanted.vcpus) != top and wanted.max_vcpus != applied.max_vcpus:
        out.append(Change(kind="vcpus", target="max_vcpus", mode="next-boot", old=top,
                          new=wanted.max_vcpus, reason="maxcpus is fixed at boot"))  # fmt: skip
    for name in ("cpu_limit_pct", "cpu_weight"):
        if getattr(wanted, name) != getattr(applied, name):
            out.append(Change(kind="cpu", target=name, mode="live",
                              old=getattr(applied, name), new=getattr(wanted, name)))  # fmt: skip
    return out


def _disks(applied: InstanceSpec, wanted: InstanceSpec) -> list[Change]:
    old = {d.name: d for d in applied.disks}
    new = {d.name: d for d in wanted.disks}
    why = _virtio(applied)
    mode: Mode = "next-boot" if why else "live"
    out = [Change(kind="disk-remove", target=n, mode=mode, reason=why) for n in old if n not in new]
    out += [Change(kind="disk-add", target=n, mode=mode, reason=why) for n in new if n not in old]
    for name in (n for n in new if n in old):
        was, now = old[name], new[name]
        if now.size_gib != was.size_gib:
            out.append(Change(kind="disk-grow", target=name, mode=mode, reason=why,
                              old=was.size_gib, new=now.size_gib))  # fmt: skip
        if now.limits != was.limits:
            out.append(Change(kind="disk-limits", target=name, mode="live",
                              old=_dump(was.limits), new=_dump(now.limits)))  # fmt: skip
        if now.model_copy(update={"size_gib": was.size_gib, "limits": was.limits}) != was:
            out.append(Change(kind="other", target=f"disk {name}", mode="next-boot"))
    return out


def _nics(applied: InstanceSpec, wanted: InstanceSpec) -> list[Change]:
    old = dict(zip(applied.nic_names, applied.nics, strict=True))
    new = dict(zip(wanted.nic_names, wanted.nics, strict=True))
    why = _virtio(applied)
    mode: Mode = "next-boot" if why else "live"
    out = [Change(kind="nic-remove", target=n, mode=mode, reason=why) for n in old if n not in new]
    out += [Change(kind="nic-add", target=n, mode=mode, reason=why) for n in new if n not in old]
    unnamed = {"name": None}  # the name is the key; None and "nic<i>" are the same NIC
    for name in (n for n in new if n in old):
        if old[name].model_copy(update=unnamed) == new[name].model_copy(update=unnamed):
            continue
        out.append(Change(kind="other", target=f"nic {name}", mode="next-boot"))
    return out


def _dump(limits: DiskLimits | None) -> dict[str, Any] | None:
    return None if limits is None else limits.model_dump(exclude_none=True)


def with_change(applied: InstanceSpec, wanted: InstanceSpec, change: Change) -> InstanceSpec:
    """``applied`` after ``change`` (a live one) took effect."""
    spec = applied
    if change.kind in ("memory", "vcpus", "cpu"):
        spec = applied.model_copy(update={change.target: getattr(wanted, change.target)})
    elif change.kind.startswith("disk-"):
        spec = applied.model_copy(update={"disks": _merge_disk(applied, wanted, change)})
    elif change.kind.startswith("nic-"):
        spec = applied.model_copy(update={"nics": _merge_nic(applied, wanted, change)})
    return spec


def _merge_disk(applied: InstanceSpec, wanted: InstanceSpec, change: Change) -> list[DiskSpec]:
    disks = [d for d in applied.disks if d.name != change.target]
    if change.kind == "disk-remove":
        return disks
    target = next(d for d in wanted.disks if d.name == change.target)
    if change.kind == "disk-add":
        return [*disks, target.model_copy(update={"limits": None})]
    was = next(d for d in applied.disks if d.name == change.target)
    field = "size_gib" if change.kind == "disk-grow" else "limits"
    now = was.model_copy(update={field: getattr(target, field)})
    return [now if d.name == change.target else d for d in applied.disks]


def _merge_nic(applied: InstanceSpec, wanted: InstanceSpec, change: Change) -> list[NicSpec]:
    named = list(zip(applied.nic_names, applied.nics, strict=True))
    # Name every NIC explicitly: removing one must not rename the others (nic<index>).
    nics = [n.model_copy(update={"name": name}) for name, n in named if name != change.target]
    if change.kind == "nic-add":
        nic = dict(zip(wanted.nic_names, wanted.nics, strict=True))[change.target]
        nics.append(nic.model_copy(update={"name": change.target}))
    return nics
