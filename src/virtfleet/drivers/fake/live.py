"""``SupportsLiveResources`` for ``FakeDriver``: live changes recorded in memory.

Keeps, per running instance, what a real hypervisor would report (balloon
target, vCPUs, attached disks and their sizes and limits, NICs) and enforces
the same preconditions as the QEMU driver (running, or paused for limits and
grow; no shrink; the boot vCPU stays), so service and API tests exercise the
same contract. ``fail_next_live`` makes the next change fail, for rollback tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from virtfleet.errors import DriverError, InvalidInputError, InvalidStateError
from virtfleet.model.instance import DiskLimits, DiskSpec, InstanceStatus, NicSpec, PowerState


@dataclass
class FakeLiveState:
    memory_mib: int | None = None
    vcpus: int | None = None
    disks: dict[str, int] = field(default_factory=dict)  # name -> size in bytes
    limits: dict[str, DiskLimits | None] = field(default_factory=dict)
    nics: list[str] = field(default_factory=list)


class FakeLive:
    """Mixed into ``FakeDriver``, which provides ``_vms``."""

    _vms: dict[str, InstanceStatus]
    fail_next_live: str | None = None

    def live_state(self, name: str) -> FakeLiveState:
        states: dict[str, FakeLiveState] = self.__dict__.setdefault("_live", {})
        return states.setdefault(name, FakeLiveState())

    def _check(self, name: str, running: bool = True) -> FakeLiveState:
        status = self._vms.get(name)
        power = status.power if status else PowerState.STOPPED
        allowed = [PowerState.RUNNING] if running else [PowerState.RUNNING, PowerState.PAUSED]
        if power not in allowed:
            raise InvalidStateError(power.value, [p.value for p in allowed])
        if self.fail_next_live:
            message, self.fail_next_live = self.fail_next_live, None
            raise DriverError(message)
        return self.live_state(name)

    async def set_memory(self, name: str, target_mib: int) -> None:
        self._check(name).memory_mib = target_mib

    async def set_vcpus(self, name: str, count: int) -> None:
        if count < 1:
            raise InvalidInputError("the boot vCPU cannot be removed")
        self._check(name).vcpus = count

    async def add_disk(self, name: str, disk: DiskSpec, path: Path) -> None:
        state = self._check(name)
        state.disks[disk.name] = path.stat().st_size if path.exists() else 0

    async def remove_disk(self, name: str, disk: str) -> None:
        self._check(name).disks.pop(disk, None)

    async def grow_disk(self, name: str, disk: str, size_bytes: int) -> None:
        state = self._check(name, running=False)
        if size_bytes < state.disks.get(disk, 0):
            raise InvalidInputError(f"disk {disk!r} cannot shrink")
        state.disks[disk] = size_bytes

    async def set_disk_limits(self, name: str, disk: str, limits: DiskLimits | None) -> None:
        self._check(name, running=False).limits[disk] = limits

    async def add_nic(self, name: str, nic_name: str, nic: NicSpec) -> None:
        self._check(name).nics.append(nic_name)

    async def remove_nic(self, name: str, nic_name: str) -> None:
        state = self._check(name)
        state.nics = [n for n in state.nics if n != nic_name]

    async def live_stats(self, name: str) -> dict[str, Any]:
        state = self.live_state(name)
        return {"balloon_actual_mib": state.memory_mib, "vcpus_present": state.vcpus}
