"""``RoutingDriver``: one ``Driver`` over a VM driver and a container driver, by ``spec.kind``.

The agent holds one driver; this one sends a spec to the driver of its kind and a
name to the driver that owns it (the container driver's ``owns``; everything else
is the VM driver's). Events of both are merged. Capability protocols (graphics,
exec, live limits, rootfs and VM snapshots) go to the driver that has them. Must not hold
state of its own beyond the two drivers.
"""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from virtfleet.drivers.base import (
    Driver,
    DriverEvent,
    DriverInfo,
    LaunchContext,
    SupportsBlockJobs,
    SupportsGraphics,
    SupportsLiveResources,
    SupportsVmSnapshots,
)
from virtfleet.drivers.stats import DriverStats, SupportsStats
from virtfleet.errors import ConflictError
from virtfleet.model.instance import DiskLimits, DiskSpec, InstanceSpec, InstanceStatus, NicSpec

if TYPE_CHECKING:
    from virtfleet.drivers.qemu.blockjobs import BlockJobs


class ContainerDriver(Driver, Protocol):
    def owns(self, name: str) -> bool: ...

    async def exec(self, name: str, argv: builtins.list[str], timeout_s: float = ...) -> Any: ...

    async def update_limits(self, name: str, spec: InstanceSpec) -> None: ...

    async def snapshot(self, name: str, snap: str) -> None: ...

    async def restore(self, name: str, snap: str) -> None: ...

    def snapshots(self, name: str) -> builtins.list[str]: ...

    def delete_snapshot(self, name: str, snap: str) -> None: ...


class RoutingDriver:
    name = "routing"

    def __init__(self, vm: Driver, container: ContainerDriver) -> None:
        self.vm = vm
        self.container = container
        self._queue: asyncio.Queue[DriverEvent] = asyncio.Queue()
        self._pumps: list[asyncio.Task[None]] = []

    def _of(self, spec: InstanceSpec) -> Driver:
        return self.container if spec.kind == "container" else self.vm

    def _for(self, name: str) -> Driver:
        return self.container if self.container.owns(name) else self.vm

    def info(self) -> DriverInfo:
        vm, ct = self.vm.info(), self.container.info()
        details = {**vm.details, "containers": ct.available, "containers_reason": ct.reason}
        details.update(ct.details)
        return DriverInfo(f"{vm.name}+{ct.name}", vm.available, vm.reason, details)

    def validate(self, spec: InstanceSpec) -> None:
        self._of(spec).validate(spec)

    async def start(self, spec: InstanceSpec, ctx: LaunchContext) -> InstanceStatus:
        return await self._of(spec).start(spec, ctx)

    async def stop(self, name: str, *, force: bool = False, timeout_s: float = 30.0) -> None:
        await self._for(name).stop(name, force=force, timeout_s=timeout_s)

    async def pause(self, name: str) -> None:
        await self._for(name).pause(name)

    async def resume(self, name: str) -> None:
        await self._for(name).resume(name)

    async def reset(self, name: str) -> None:
        await self._for(name).reset(name)

    async def delete(self, name: str) -> None:
        """Both drivers: each removes only what it has (delete is idempotent)."""
        await self.container.delete(name)
        await self.vm.delete(name)

    async def status(self, name: str) -> InstanceStatus:
        return await self._for(name).status(name)

    async def adopt(self, name: str) -> InstanceStatus:
        return await self._for(name).adopt(name)

    async def list(self) -> builtins.list[str]:
        return sorted({*await self.vm.list(), *await self.container.list()})

    async def events(self) -> AsyncIterator[DriverEvent]:
        if not self._pumps:
            self._pumps = [asyncio.create_task(self._pump(d)) for d in (self.vm, self.container)]
        while True:
            yield await self._queue.get()

    async def _pump(self, driver: Driver) -> None:
        async for event in driver.events():
            self._queue.put_nowait(event)

    def console_socket(self, name: str) -> Path | None:
        return self._for(name).console_socket(name)

    def console_log(self, name: str) -> Path | None:
        return self.container.console_log(name) or self.vm.console_log(name)

    async def close(self) -> None:
        for task in self._pumps:
            task.cancel()
        self._pumps = []
        await self.vm.close()
        await self.container.close()

    # -- capabilities ---------------------------------------------------------------

    def vnc_socket(self, name: str) -> Path | None:
        vm = self.vm
        return vm.vnc_socket(name) if isinstance(vm, SupportsGraphics) else None

    async def screenshot(self, name: str) -> bytes:
        if not isinstance(self.vm, SupportsGraphics) or self.container.owns(name):
            raise ConflictError(f"instance {name!r} has no screen (containers have a console)")
        return await self.vm.screenshot(name)

    def containers(self) -> ContainerDriver:
        return self.container

    # -- VM-only capabilities: metrics counters, VM snapshots and live resources ---------

    async def stats(self, name: str) -> DriverStats:
        driver = self.container if self.container.owns(name) else self.vm
        if not isinstance(driver, SupportsStats):
            return DriverStats(unavailable={"driver": f"{driver.name} keeps no counters"})
        return await driver.stats(name)

    def _vm_snapshots(self, name: str) -> SupportsVmSnapshots:
        if self.container.owns(name) or not isinstance(self.vm, SupportsVmSnapshots):
            raise ConflictError(f"instance {name!r} has no VM snapshots (containers: rootfs)")
        return self.vm

    async def snapshot_disks(
        self,
        name: str,
        overlays: Mapping[str, Path],
        state: Path | None = None,
        in_pause: Callable[[], Awaitable[None]] | None = None,
    ) -> float | None:
        return await self._vm_snapshots(name).snapshot_disks(name, overlays, state, in_pause)

    async def merge_disk(self, name: str, disk: str, backing: str) -> None:
        await self._vm_snapshots(name).merge_disk(name, disk, backing)

    def defer_start(self, name: str) -> None:
        self._vm_snapshots(name).defer_start(name)

    async def load_state(self, name: str, state: Path) -> None:
        await self._vm_snapshots(name).load_state(name, state)

    def block_jobs(self, name: str) -> BlockJobs | None:
        if self.container.owns(name) or not isinstance(self.vm, SupportsBlockJobs):
            return None
        return self.vm.block_jobs(name)

    def nbd_socket(self, name: str) -> Path:
        if self.container.owns(name) or not isinstance(self.vm, SupportsBlockJobs):
            raise ConflictError(f"instance {name!r} has no block layer to back up live")
        return self.vm.nbd_socket(name)

    def _live(self, name: str) -> SupportsLiveResources:
        if self.container.owns(name) or not isinstance(self.vm, SupportsLiveResources):
            raise ConflictError(f"instance {name!r} cannot change resources this way")
        return self.vm

    async def set_memory(self, name: str, target_mib: int) -> None:
        await self._live(name).set_memory(name, target_mib)

    async def set_vcpus(self, name: str, count: int) -> None:
        await self._live(name).set_vcpus(name, count)

    async def add_disk(self, name: str, disk: DiskSpec, path: Path) -> None:
        await self._live(name).add_disk(name, disk, path)

    async def remove_disk(self, name: str, disk: str) -> None:
        await self._live(name).remove_disk(name, disk)

    async def grow_disk(self, name: str, disk: str, size_bytes: int) -> None:
        await self._live(name).grow_disk(name, disk, size_bytes)

    async def set_disk_limits(self, name: str, disk: str, limits: DiskLimits | None) -> None:
        await self._live(name).set_disk_limits(name, disk, limits)

    async def add_nic(self, name: str, nic_name: str, nic: NicSpec) -> None:
        await self._live(name).add_nic(name, nic_name, nic)

    async def remove_nic(self, name: str, nic_name: str) -> None:
        await self._live(name).remove_nic(name, nic_name)

    async def live_stats(self, name: str) -> dict[str, Any]:
        return await self._live(name).live_stats(name)
