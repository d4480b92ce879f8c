"""Backup use cases: back up, list, show, verify, prune, delete and restore backups.

Owns request checks (names, ids, instance state for restores over the original)
and running the work as operations with progress: backups on
``instance/<name>``, repository-wide work on ``backups``, restores on
``restore/<name>``. A failed backup is an event (``backup.failed``). The host's
``BackupManager`` does the work. Must not know HTTP.
"""

from __future__ import annotations

import builtins
from typing import Any

from virtfleet.errors import AlreadyExistsError, InvalidStateError, VirtfleetError
from virtfleet.host.backups import BackupManager, RepositoryAccess
from virtfleet.model.backup import BackupInfo, PruneResult, VerifyResult
from virtfleet.model.event import Event
from virtfleet.model.instance import InstanceSpec, PowerState
from virtfleet.model.names import validate_name
from virtfleet.model.operation import Operation
from virtfleet.service.disks import refuse_kept
from virtfleet.service.instances import InstanceService
from virtfleet.service.operations import OpContext, OperationRunner
from virtfleet.state.repos import EventLog, InstanceRepo
from virtfleet.state.store import StateStore
from virtfleet.storage.backup.manifest import BackupManifest
from virtfleet.storage.backup.prune import RetentionPolicy
from virtfleet.storage.backup.repo import check_backup_id


def info_of(m: BackupManifest) -> BackupInfo:
    return BackupInfo(
        id=m.id,
        instance=m.instance,
        created_at=m.created_at,
        kind=m.kind,
        parent=m.parent,
        full_reason=m.full_reason,
        consistency=m.consistency,
        disks={name: d.size for name, d in m.disks.items()},
        stats=m.stats.model_dump(),
    )


class BackupService:
    def __init__(
        self,
        store: StateStore,
        runner: OperationRunner,
        events: EventLog,
        manager: BackupManager,
        instances: InstanceService,
    ) -> None:
        self._repo = InstanceRepo(store)
        self._runner = runner
        self._events = events
        self.manager = manager
        self.access = RepositoryAccess(manager)
        self._instances = instances

    async def list(self, instance: str | None = None) -> builtins.list[BackupInfo]:
        if instance is not None:
            validate_name(instance, "instance name")
        return [info_of(m) for m in self.manager.repo.list(instance)]

    async def get(self, backup_id: str) -> BackupInfo:
        return info_of(self.manager.repo.get(check_backup_id(backup_id)))

    async def create(self, vm: str, full: bool = False) -> Operation:
        """Back up ``vm`` (incremental when its dirty bitmap can be trusted, else full)."""
        await self._repo.get(validate_name(vm, "instance name"))

        async def run(ctx: OpContext) -> dict[str, Any]:
            rec = await self._repo.get(vm)
            try:
                made = await self.manager.backup(
                    rec.spec.normalized(), full=full, report=ctx.progress
                )
            except VirtfleetError as err:
                await self._emit("backup.failed", vm, f"backup of {vm} failed: {err.message}")
                raise
            note = f" ({made.full_reason})" if made.full_reason else ""
            await self._emit("backup.created", vm, f"{made.kind} backup {made.id}{note}")
            return info_of(made).model_dump(mode="json")

        return await self._runner.submit("backup.create", f"instance/{vm}", run)

    async def wait(self, op_id: str, timeout_s: float) -> Operation:
        """Wait for one of this service's operations (schedules run backups, then prunes)."""
        return await self._runner.wait(op_id, timeout_s)

    async def verify(self) -> Operation:
        async def run(ctx: OpContext) -> dict[str, Any]:
            await ctx.progress(5, "re-reading every chunk")
            r = await self.access.verify()
            if not r.ok:
                bad = ", ".join(r.damaged_backups + r.unreadable_manifests)
                await self._emit("backup.damaged", "", f"damaged backups: {bad}")
            return VerifyResult(ok=r.ok, **_fields(r)).model_dump(mode="json")

        return await self._runner.submit("backup.verify", "backups", run)

    async def prune(
        self, instance: str | None, policy: RetentionPolicy, dry_run: bool = False
    ) -> Operation:
        if instance is not None:
            validate_name(instance, "instance name")

        async def run(ctx: OpContext) -> dict[str, Any]:
            await ctx.progress(5, "applying the retention policy")
            kept, removed, chunks, freed = await self.access.prune(instance, policy, dry_run)
            res = PruneResult(kept=kept, removed=removed, chunks_removed=chunks, bytes_freed=freed)
            return res.model_dump(mode="json")

        return await self._runner.submit("backup.prune", "backups", run)

    async def delete(self, backup_id: str) -> Operation:
        self.manager.repo.get(check_backup_id(backup_id))

        async def run(ctx: OpContext) -> dict[str, Any]:
            await self.access.delete(backup_id)
            return {"id": backup_id, "deleted": True}

        return await self._runner.submit("backup.delete", "backups", run)

    async def restore(
        self, backup_id: str, target: str | None = None, start: bool = False
    ) -> Operation:
        """Restore to a new instance ``target`` or, without one, over the original (stopped)."""
        manifest = self.manager.repo.get(check_backup_id(backup_id))
        vm = validate_name(target or manifest.instance, "instance name")
        existing = await self._repo.find(vm)
        if target is not None and existing is not None:
            raise AlreadyExistsError(f"instance {vm!r} already exists")
        if existing is None:  # a new instance: never over disks kept from a deleted one
            refuse_kept(self.manager.agent.disks, vm)
        stopped = (PowerState.STOPPED, PowerState.CRASHED)
        if target is None and existing is not None and existing.status.power not in stopped:
            raise InvalidStateError(existing.status.power.value, "stopped")

        async def run(ctx: OpContext) -> dict[str, Any]:
            await ctx.progress(10, f"writing the disks of {vm}")
            replace = target is None and await self._repo.find(vm) is not None
            await self.manager.restore_disks(manifest, vm, replace=replace)
            if not replace:
                await self._create(manifest, vm, start, ctx)
            await self._emit("backup.restored", vm, f"restored from backup {backup_id}")
            return {"id": backup_id, "instance": vm, "replaced": replace}

        return await self._runner.submit("backup.restore", f"restore/{vm}", run)

    async def _create(self, m: BackupManifest, vm: str, start: bool, ctx: OpContext) -> None:
        spec = InstanceSpec.model_validate({**m.spec, "name": vm})
        try:
            op = await self._instances.create(spec, start=start, reuse_disks=True)  # restored
        except BaseException:
            self.manager.agent.disks.remove(vm)
            raise
        await ctx.progress(60, f"creating {vm}")
        done = await self._runner.wait(op.id, 600)
        if done.status.value != "success":
            if await self._repo.find(vm) is None:  # its failed start removed it: not the disks
                self.manager.agent.disks.remove(vm)
            raise VirtfleetError(f"restored disks, but creating {vm} failed: {done.message}")

    async def _emit(self, kind: str, vm: str, message: str) -> None:
        target = f"instance/{vm}" if vm else "backups"
        await self._events.append(Event(kind=kind, target=target, message=message))


def _fields(r: Any) -> dict[str, Any]:
    return {
        "backups": r.backups,
        "chunks": r.chunks,
        "damaged_backups": r.damaged_backups,
        "damaged_chunks": r.damaged_chunks,
        "unreadable_manifests": r.unreadable_manifests,
    }
