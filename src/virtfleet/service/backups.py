"""Backup use cases: back up, list, show, verify, prune, delete and restore backups.

Owns request checks (names, ids, instance state for restores over the original)
and running the work as operations with progress: backups on
``instance/<name>``, repository-wide work on ``backups``, restores on
``restore/<name>``. A failed backup is an event (``backup.failed``). The owning
host does the work, through the ``HostOps`` door. Must not know HTTP or host/.
"""

from __future__ import annotations

import builtins
from datetime import UTC, datetime
from typing import Any, Protocol

from virtfleet.errors import (
    AlreadyExistsError,
    InvalidInputError,
    InvalidStateError,
    VirtfleetError,
)
from virtfleet.hostops import BackupOps, DiskOps
from virtfleet.model.backup import (
    BackupInfo,
    LastVerify,
    PruneResult,
    RepositoryStats,
    RetentionPolicy,
    VerifyResult,
)
from virtfleet.model.defaults import fresh_copy
from virtfleet.model.event import Event
from virtfleet.model.instance import InstanceSpec, PowerState
from virtfleet.model.names import validate_name
from virtfleet.model.operation import Operation
from virtfleet.service.disks import refuse_kept
from virtfleet.service.errcodes import error_from_code
from virtfleet.service.instances import InstanceService
from virtfleet.service.operations import OpContext, OperationRunner
from virtfleet.state.keys import BACKUP_VERIFY
from virtfleet.state.repos import EventLog, InstanceRepo, ModelRepo
from virtfleet.state.store import StateStore
from virtfleet.storage.backup.manifest import BackupManifest
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


class HostBackups(BackupOps, DiskOps, Protocol):
    """What backups need of the host: its backup actions and its disk directories."""


class BackupService:
    def __init__(
        self,
        store: StateStore,
        runner: OperationRunner,
        events: EventLog,
        host: HostBackups,
        instances: InstanceService,
    ) -> None:
        self._repo = InstanceRepo(store)
        self._runner = runner
        self._events = events
        self._host = host
        self._instances = instances
        self._verified = ModelRepo(store, BACKUP_VERIFY, LastVerify)

    async def list(self, instance: str | None = None) -> builtins.list[BackupInfo]:
        if instance is not None:
            validate_name(instance, "instance name")
        return [info_of(m) for m in await self._host.backups(instance)]

    async def get(self, backup_id: str) -> BackupInfo:
        return info_of(await self._host.backup_get(check_backup_id(backup_id)))

    async def create(self, vm: str, full: bool = False) -> Operation:
        """Back up ``vm`` (incremental when its dirty bitmap can be trusted, else full)."""
        await self._repo.get(validate_name(vm, "instance name"))

        async def run(ctx: OpContext) -> dict[str, Any]:
            rec = await self._repo.get(vm)
            try:
                made = await self._host.backup(rec.spec.normalized(), full, ctx.progress)
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

    async def stats(self) -> RepositoryStats:
        """The repository's counts, sizes, dedup ratio and the last verify's result."""
        r = await self._host.backup_stats()
        found = await self._verified.get_raw("last")
        last = found[0] if found and isinstance(found[0], LastVerify) else None
        return RepositoryStats(
            backups=r.backups, instances=r.instances, chunks=r.chunks,
            logical_bytes=r.logical_bytes, stored_bytes=r.stored_bytes,
            dedup_ratio=r.dedup_ratio, last_verify=last,
        )  # fmt: skip

    async def verify(self) -> Operation:
        async def run(ctx: OpContext) -> dict[str, Any]:
            await ctx.progress(5, "re-reading every chunk")
            r = await self._host.backup_verify()
            if not r.ok:
                bad = ", ".join(r.damaged_backups + r.unreadable_manifests)
                await self._emit("backup.damaged", "", f"damaged backups: {bad}")
            result = VerifyResult(ok=r.ok, **_fields(r))
            last = LastVerify(at=datetime.now(UTC), **result.model_dump())
            await self._verified.put("last", last)
            return result.model_dump(mode="json")

        return await self._runner.submit("backup.verify", "backups", run)

    async def prune(
        self, instance: str | None, policy: RetentionPolicy, dry_run: bool = False
    ) -> Operation:
        if instance is not None:
            validate_name(instance, "instance name")

        async def run(ctx: OpContext) -> dict[str, Any]:
            await ctx.progress(5, "applying the retention policy")
            kept, removed, chunks, freed = await self._host.backup_prune(instance, policy, dry_run)
            res = PruneResult(kept=kept, removed=removed, chunks_removed=chunks, bytes_freed=freed)
            return res.model_dump(mode="json")

        return await self._runner.submit("backup.prune", "backups", run)

    async def delete(self, backup_id: str) -> Operation:
        await self._host.backup_get(check_backup_id(backup_id))

        async def run(ctx: OpContext) -> dict[str, Any]:
            await self._host.backup_delete(backup_id)
            return {"id": backup_id, "deleted": True}

        return await self._runner.submit("backup.delete", "backups", run)

    async def restore(
        self, backup_id: str, target: str | None = None, start: bool = False
    ) -> Operation:
        """Restore to a new instance ``target`` or, without one, over the original (stopped).

        Over an existing VM the restore runs on that instance's queue: a start asked for
        before it runs first (and the restore then refuses), one asked for after waits.
        A new instance's name is claimed before any disk file is written.
        """
        manifest = await self._host.backup_get(check_backup_id(backup_id))
        vm = validate_name(target or manifest.instance, "instance name")
        existing = await self._repo.find(vm)
        if target is not None and existing is not None:
            raise AlreadyExistsError(f"instance {vm!r} already exists")
        if existing is None:  # a new instance: never over disks kept from a deleted one
            refuse_kept(self._host, vm)
            # The original brought back keeps its MACs and UUID; a new VM (--to) its own.
            return await self._restore_new(manifest, vm, start, keep_identity=target is None)
        _check_stopped(self._instances.expected_power(existing))

        async def run(ctx: OpContext) -> dict[str, Any]:
            current = await self._repo.get(vm)  # NotFoundError if deleted meanwhile
            _check_stopped(current.status.power.value)
            await ctx.progress(10, f"writing the disks of {vm}")
            await self._host.backup_restore(manifest, vm, replace=True)
            await self._emit("backup.restored", vm, f"restored from backup {backup_id}")
            return {"id": backup_id, "instance": vm, "replaced": True}

        return await self._instances.submit_change("backup.restore", vm, run)

    async def _restore_new(
        self, m: BackupManifest, vm: str, start: bool, keep_identity: bool
    ) -> Operation:
        """Create ``vm`` from the backup: the create claims the name, then writes the disks.
        A new VM (not the original brought back) gets its own MACs and UUID, so it can run
        beside the original."""
        try:
            spec = InstanceSpec.model_validate(m.spec)
        except ValueError as err:
            raise InvalidInputError(f"backup {m.id} holds no valid instance spec: {err}") from err
        spec = spec if keep_identity else fresh_copy(spec, vm)

        async def disks() -> None:
            await self._host.backup_restore(m, vm, replace=False)

        create = await self._instances.create(spec, prepare=disks)

        async def run(ctx: OpContext) -> dict[str, Any]:
            await ctx.progress(10, f"creating {vm} and writing its disks")
            await self._finish(create, f"restoring {vm}")
            if start:
                await ctx.progress(80, f"starting {vm}")
                await self._finish(await self._instances.change_state(vm, "start"), "starting")
            await self._emit("backup.restored", vm, f"restored from backup {m.id}")
            return {"id": m.id, "instance": vm, "replaced": False}

        # Not "instance/VM": the create it waits for runs there.
        return await self._runner.submit("backup.restore", f"restore/{vm}", run)

    async def _finish(self, op: Operation, what: str) -> None:
        done = await self._runner.wait(op.id, 600)
        if done.status.value != "success":
            raise error_from_code(done.error_code or "internal", f"{what}: {done.message}")

    async def _emit(self, kind: str, vm: str, message: str) -> None:
        target = f"instance/{vm}" if vm else "backups"
        await self._events.append(Event(kind=kind, target=target, message=message))


def _check_stopped(power: str) -> None:
    if power not in (PowerState.STOPPED.value, PowerState.CRASHED.value):
        raise InvalidStateError(power, "stopped")


def _fields(r: Any) -> dict[str, Any]:
    return {
        "backups": r.backups,
        "chunks": r.chunks,
        "damaged_backups": r.damaged_backups,
        "damaged_chunks": r.damaged_chunks,
        "unreadable_manifests": r.unreadable_manifests,
    }
