"""The agent's half of live resource changes: move a running VM from its applied spec
towards its wanted spec, one change at a time, and say how far it got.

Owns the order of live changes (removals first, additions last), creating a
hot-added disk's file, growing disk files before a boot, and the cgroup CPU
and memory limits derived from a spec (``cgroup_limits``). Must not decide
whether a change is allowed (the service did, with ``model.resources``) nor
write the store (the agent does, with what this returns).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from virtfleet.drivers.base import SupportsLiveResources
from virtfleet.errors import HostError, VirtfleetError
from virtfleet.host.disks import DiskManager
from virtfleet.model.instance import DeviceModel, InstanceSpec
from virtfleet.model.resources import Change, changes, with_change

MEMORY_HEADROOM_MIB = 256  # QEMU's own needs above guest RAM, so it is never OOM-killed
MIB = 1024 * 1024
_ORDER = ["nic-remove", "disk-remove", "vcpus", "memory", "cpu", "disk-add", "disk-grow"]
_ORDER += ["disk-limits", "nic-add"]
MAX_PASSES = 3  # a hot-added disk's limits are a second change, applied in the next pass


def cgroup_limits(spec: InstanceSpec) -> dict[str, Any]:
    """cgroup limits of a VM: the user's CPU cap, else its vCPUs plus one core for QEMU's
    own threads; memory from the boot RAM (the balloon can give all of it back)."""
    boot = spec.boot_memory_mib
    quota = spec.cpu_limit_pct if spec.cpu_limit_pct else 100.0 * (spec.vcpus + 1)
    return {
        "cpu_quota_pct": quota,
        "cpu_weight": spec.cpu_weight,
        "memory_max_bytes": (boot + boot // 10 + MEMORY_HEADROOM_MIB) * MIB,
        "pids_max": None,
    }


def launched(spec: InstanceSpec) -> InstanceSpec:
    """What a fresh QEMU for ``spec`` has before any live change: its boot RAM, no throttling."""
    disks = [d.model_copy(update={"limits": None}) for d in spec.disks]
    if spec.device_model is not DeviceModel.VIRTIO:
        return spec.model_copy(update={"disks": disks})  # no balloon: booted with memory_mib
    return spec.model_copy(update={"memory_mib": spec.boot_memory_mib, "disks": disks})


@dataclass
class LiveApplier:
    driver: SupportsLiveResources
    disks: DiskManager

    async def apply(
        self, name: str, applied: InstanceSpec, wanted: InstanceSpec, cgroup: Any
    ) -> tuple[InstanceSpec, VirtfleetError | None]:
        """Apply every live change; the spec now live, and the error that stopped it (if any)."""
        for _ in range(MAX_PASSES):
            todo = [c for c in changes(applied, wanted) if c.mode == "live"]
            if not todo:
                break
            for change in sorted(todo, key=lambda c: _ORDER.index(c.kind)):
                try:
                    await self._one(name, wanted, change, cgroup)
                except VirtfleetError as err:
                    return applied, err
                applied = with_change(applied, wanted, change)
        try:
            set_cpu(cgroup, applied)
        except VirtfleetError as err:
            return applied, err
        return applied, None

    async def _one(self, name: str, wanted: InstanceSpec, change: Change, cgroup: Any) -> None:
        kind, target = change.kind, change.target
        if kind == "memory" and target == "memory_mib":
            await self.driver.set_memory(name, wanted.memory_mib)
        elif kind == "vcpus":
            await self.driver.set_vcpus(name, wanted.vcpus)
        elif kind == "disk-remove":
            await self.driver.remove_disk(name, target)
        elif kind == "disk-add":
            await self._add_disk(name, wanted, target)
        elif kind == "disk-grow":
            disk = _disk(wanted, target)
            await self.driver.grow_disk(name, target, _bytes(disk.size_gib or 0))
        elif kind == "disk-limits":
            await self.driver.set_disk_limits(name, target, _disk(wanted, target).limits)
        elif kind == "nic-remove":
            await self.driver.remove_nic(name, target)
        elif kind == "nic-add":
            nic = dict(zip(wanted.nic_names, wanted.nics, strict=True))[target]
            await self.driver.add_nic(name, target, nic)
        # "cpu" changes and min_memory_mib: the cgroup update after the loop / bookkeeping.

    async def _add_disk(self, name: str, wanted: InstanceSpec, disk_name: str) -> None:
        disk = _disk(wanted, disk_name)
        one = wanted.model_copy(update={"disks": [disk]})
        paths, created = await self.disks.ensure(one)
        try:
            await self.driver.add_disk(name, disk, paths[disk_name])
        except BaseException:
            self.disks.discard(created)
            raise


def set_cpu(cgroup: Any, spec: InstanceSpec) -> None:
    """Write the CPU cap and weight of ``spec`` into the VM's cgroup (if it has one)."""
    if cgroup is None or "cpu" not in cgroup.dirs:
        return
    limits = cgroup_limits(spec)
    try:
        cgroup.set_cpu_quota(limits["cpu_quota_pct"])
        cgroup.set_cpu_weight(limits["cpu_weight"])
    except OSError as err:
        raise HostError(f"cannot set the CPU limits of {cgroup.name}: {err.strerror}") from err


def _disk(spec: InstanceSpec, name: str) -> Any:
    return next(d for d in spec.disks if d.name == name)


def _bytes(size_gib: float) -> int:
    return int(size_gib * 1024) * MIB  # whole MiB, as DiskManager creates them
