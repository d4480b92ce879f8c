"""The in-process host-operations door: ``virtfleet.hostops.HostOps`` over this host's agent.

Owns the host actions that combine several host parts under one instance lock:
snapshot create/revert/delete and backup restore run under the agent's
per-instance lock (``Agent.lock``), and revert powers the VM off and on through
the agent's public ``stop_held``/``start_held``, never through its internals.
Everything else is a thin call on the part that owns it (agent, snapshot and
backup managers, the one ``DiskManager``, guest agents, the host's networking).
Built once by the composition root; services only ever see it as ``HostOps``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from virtfleet.drivers.base import SupportsVmSnapshots
from virtfleet.errors import InvalidStateError
from virtfleet.host.agent import Agent
from virtfleet.host.backups import BackupManager, RepositoryAccess
from virtfleet.host.disks import DiskManager
from virtfleet.host.guest import GuestAgents
from virtfleet.host.snapshots import SnapshotManager
from virtfleet.hostops import ContainerOps, Pruned, Report
from virtfleet.model.backup import RetentionPolicy, Snapshot
from virtfleet.model.container import ExecOutput
from virtfleet.model.guest import GuestInfo
from virtfleet.model.instance import Firmware, InstanceSpec, PowerState
from virtfleet.model.network import Lease, NetworkSpec, NetworkState
from virtfleet.model.pools import DEFAULT_POOL
from virtfleet.network.base import NetworkHost
from virtfleet.storage import clones
from virtfleet.storage.backup.manifest import BackupManifest
from virtfleet.storage.backup.repo import RepoStats, VerifyReport


class LocalHostOps:
    """This host's ``HostOps``; every method's contract is the protocol's."""

    def __init__(
        self,
        agent: Agent,
        snapshots: SnapshotManager,
        backups: BackupManager,
        guests: GuestAgents,
        networks: NetworkHost,
        containers: ContainerOps,
    ) -> None:
        self.agent = agent
        self.snapshot_manager = snapshots
        self.backup_manager = backups
        self.repository = RepositoryAccess(backups)
        self.guests = guests
        self.networks = networks
        self.containers: ContainerOps = LockedContainers(containers, agent)
        self.disks: DiskManager = agent.disks  # the one DiskManager, shared with the agent

    def lock(self, name: str) -> asyncio.Lock:
        return self.agent.lock(name)

    # -- power ---------------------------------------------------------------------------

    async def start_instance(self, name: str) -> None:
        await self.agent.start_instance(name)

    async def stop_instance(self, name: str, force: bool = False, timeout_s: float = 60.0) -> None:
        await self.agent.stop_instance(name, force, timeout_s)

    async def restart_instance(
        self, name: str, force: bool = False, timeout_s: float = 60.0
    ) -> None:
        await self.agent.restart_instance(name, force, timeout_s)

    async def pause_instance(self, name: str) -> None:
        await self.agent.pause_instance(name)

    async def resume_instance(self, name: str) -> None:
        await self.agent.resume_instance(name)

    # -- snapshots -----------------------------------------------------------------------

    async def snapshots(self, name: str) -> list[Snapshot]:
        return self.snapshot_manager.snapshots(name)

    async def snapshot_create(self, spec: InstanceSpec, snap: str, memory: bool) -> Snapshot:
        async with self.lock(spec.name):
            return await self.snapshot_manager.create(spec, snap, memory)

    async def snapshot_delete(self, spec: InstanceSpec, snap: str) -> None:
        async with self.lock(spec.name):
            await self.snapshot_manager.delete(spec, snap)

    async def snapshot_revert(self, spec: InstanceSpec, snap: str) -> None:
        async with self.lock(spec.name):
            memory = self.snapshot_manager.check_revert(spec, snap)
            power = (await self.agent.repo.get(spec.name)).status.power
            running = power in (PowerState.RUNNING, PowerState.PAUSED)
            if running:
                await self.agent.stop_held(spec.name, force=True, timeout_s=0.0)
            await self.snapshot_manager.reset_to(spec, snap)
            if memory:
                await self._start_from_memory(spec.name, snap)
            elif running:
                await self.agent.start_held(spec.name)

    async def _start_from_memory(self, vm: str, snap: str) -> None:
        """Start ``vm`` paused before its CPUs run, load ``snap``'s RAM and device state."""
        driver = self.agent.driver
        if not isinstance(driver, SupportsVmSnapshots):
            raise InvalidStateError("without VM snapshots", "a VM", what=f"instance {vm!r}")
        driver.defer_start(vm)
        await self.agent.start_held(vm)
        try:
            await driver.load_state(vm, self.snapshot_manager.state_file(vm, snap))
        except BaseException:
            await self.agent.stop_held(vm, force=True, timeout_s=0.0)
            raise

    # -- backups -------------------------------------------------------------------------

    async def backup(self, spec: InstanceSpec, full: bool, report: Report) -> BackupManifest:
        return await self.backup_manager.backup(spec, full=full, report=report)

    async def backup_restore(self, manifest: BackupManifest, vm: str, replace: bool) -> None:
        async with self.lock(vm):
            await self.backup_manager.restore_disks(manifest, vm, replace=replace)

    async def backup_recover(self, specs: list[InstanceSpec]) -> None:
        await self.backup_manager.recover(specs)

    async def backups(self, instance: str | None = None) -> list[BackupManifest]:
        return self.backup_manager.repo.list(instance)

    async def backup_get(self, backup_id: str) -> BackupManifest:
        return self.backup_manager.repo.get(backup_id)

    async def backup_stats(self) -> RepoStats:
        return await asyncio.to_thread(self.backup_manager.repo.stats)

    async def backup_verify(self) -> VerifyReport:
        return await self.repository.verify()

    async def backup_prune(
        self, instance: str | None, policy: RetentionPolicy, dry_run: bool
    ) -> Pruned:
        return await self.repository.prune(instance, policy, dry_run)

    async def backup_delete(self, backup_id: str) -> None:
        await self.repository.delete(backup_id)

    # -- disk files ----------------------------------------------------------------------

    def disk_dir(self, name: str) -> Path:
        return self.disks.dir(name)

    def disk_path(self, name: str, disk: str) -> Path:
        return self.disks.path(name, disk)

    def kept_disks(self, name: str) -> list[str]:
        return self.disks.kept(name)

    def disk_names(self) -> list[str]:
        return self.disks.names()

    async def disk_clone(
        self,
        name: str,
        disk: str,
        base: Path,
        linked: bool,
        virtual_size: int,
        firmware: Firmware = Firmware.BIOS,
        keep_tpm: bool = False,
        pool: str | None = None,
    ) -> None:
        if pool not in (None, DEFAULT_POOL):  # made through the pool: linked where thin_clone
            await self.disks.clone_into(name, disk, pool, base, linked, virtual_size)
            await asyncio.to_thread(self.disks.adopt, name, firmware, base, keep_tpm)
            return
        dest = self.disks.path(name, disk)
        try:
            if linked:
                await clones.linked(base, dest, virtual_size)
            else:
                await clones.full(base, dest, None)
            await asyncio.to_thread(self.disks.adopt, name, firmware, base, keep_tpm)
        except BaseException:
            dest.unlink(missing_ok=True)
            raise

    async def machine_to_template(self, name: str, firmware: Firmware, image: Path) -> None:
        await asyncio.to_thread(self.disks.to_template, name, firmware, image)

    def disk_usage(self, name: str) -> int:
        return self.disks.usage(name)

    def remove_disks(self, name: str) -> None:
        self.disks.remove(name)

    # -- consoles, guest agent, live figures ----------------------------------------------

    def socket_path(self, name: str) -> Path | None:
        return self.agent.socket_path(name)

    def log_path(self, name: str) -> Path | None:
        return self.agent.log_path(name)

    def vnc_socket(self, name: str) -> Path | None:
        return self.agent.vnc_socket(name)

    async def screenshot(self, name: str) -> bytes:
        return await self.agent.screenshot(name)

    async def guest_info(self, name: str) -> GuestInfo:
        return await self.guests.info(name)

    async def live_stats(self, name: str) -> dict[str, Any]:
        return await self.agent.live_stats(name)

    # -- network realisation -------------------------------------------------------------

    async def network_check(self, spec: NetworkSpec) -> None:
        await self.networks.check(spec)

    async def network_create(self, spec: NetworkSpec, others: list[NetworkSpec]) -> None:
        await self.networks.create(spec, others)

    async def network_remove(self, spec: NetworkSpec, others: list[NetworkSpec]) -> None:
        await self.networks.remove(spec, others)

    async def network_state(self, spec: NetworkSpec) -> NetworkState:
        return await self.networks.state(spec)

    def network_leases(self, network: str) -> list[Lease]:
        return self.networks.leases(network)


class LockedContainers:
    """A container runtime's calls with rootfs snapshot and restore under the instance
    lock (never beside a start); exec and limits are not (an exec may outlast a stop)."""

    def __init__(self, runtime: ContainerOps, agent: Agent) -> None:
        self.runtime = runtime
        self.agent = agent

    async def exec(self, name: str, argv: list[str], timeout_s: float) -> ExecOutput:
        return await self.runtime.exec(name, argv, timeout_s)

    async def update_limits(self, name: str, spec: InstanceSpec) -> None:
        await self.runtime.update_limits(name, spec)

    async def snapshot(self, name: str, snap: str) -> None:
        async with self.agent.lock(name):
            await self.runtime.snapshot(name, snap)

    async def restore(self, name: str, snap: str) -> None:
        async with self.agent.lock(name):
            await self.runtime.restore(name, snap)

    def snapshots(self, name: str) -> list[str]:
        return self.runtime.snapshots(name)

    def delete_snapshot(self, name: str, snap: str) -> None:
        self.runtime.delete_snapshot(name, snap)
