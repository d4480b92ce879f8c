"""Snapshot use cases: list, take, revert and delete snapshots of an instance.

Owns the checks a request must pass before anything changes (instance and
snapshot names, existence, children) and running the work as operations on
``instance/<name>`` (so it queues behind power changes). The owning host does
the disk work under the instance's lock (``HostOps``). Must not know HTTP or host/.
"""

from __future__ import annotations

from typing import Any

from virtfleet.errors import AlreadyExistsError, InUseError, InvalidStateError, NotFoundError
from virtfleet.hostops import SnapshotOps
from virtfleet.model.backup import Snapshot
from virtfleet.model.event import Event
from virtfleet.model.instance import PowerState
from virtfleet.model.names import validate_name
from virtfleet.model.operation import Operation
from virtfleet.service.operations import OpContext, OperationRunner
from virtfleet.state.repos import EventLog, InstanceRepo
from virtfleet.state.store import StateStore


class SnapshotService:
    def __init__(
        self,
        store: StateStore,
        runner: OperationRunner,
        events: EventLog,
        host: SnapshotOps,
    ) -> None:
        self._repo = InstanceRepo(store)
        self._runner = runner
        self._events = events
        self._host = host

    async def list(self, vm: str) -> list[Snapshot]:
        await self._repo.get(validate_name(vm, "instance name"))
        return await self._host.snapshots(vm)

    async def _find(self, vm: str, snap: str) -> Snapshot:
        validate_name(snap, "snapshot name")
        for s in await self.list(vm):
            if s.name == snap:
                return s
        raise NotFoundError(f"snapshot {snap!r} of {vm!r} not found")

    async def create(self, vm: str, snap: str, memory: bool = False) -> Operation:
        """Take snapshot ``snap`` of every disk (online: no guest pause; ``memory``: RAM too,
        running VMs only). ``AlreadyExistsError``/``InvalidNameError``/``InvalidStateError``
        before anything is done."""
        validate_name(snap, "snapshot name")
        if any(s.name == snap for s in await self.list(vm)):
            raise AlreadyExistsError(f"snapshot {snap!r} of {vm!r} already exists")
        power = (await self._repo.get(vm)).status.power
        if memory and power not in (PowerState.RUNNING, PowerState.PAUSED):
            raise InvalidStateError(power.value, ["running", "paused"])

        async def run(ctx: OpContext) -> dict[str, Any]:
            await ctx.progress(10, f"snapshotting {vm}")
            rec = await self._repo.get(vm)
            made = await self._host.snapshot_create(rec.spec.normalized(), snap, memory)
            await self._emit("snapshot.created", vm, f"snapshot {snap} taken")
            return made.model_dump(mode="json")

        return await self._runner.submit("snapshot.create", f"instance/{vm}", run)

    async def revert(self, vm: str, snap: str) -> Operation:
        """Put the disks back to ``snap``; a running VM is restarted on the reverted disks."""
        await self._find(vm, snap)

        async def run(ctx: OpContext) -> dict[str, Any]:
            await ctx.progress(10, f"reverting {vm} to {snap}")
            rec = await self._repo.get(vm)
            await self._host.snapshot_revert(rec.spec.normalized(), snap)
            await self._emit("snapshot.reverted", vm, f"reverted to snapshot {snap}")
            return {"instance": vm, "snapshot": snap}

        return await self._runner.submit("snapshot.revert", f"instance/{vm}", run)

    async def delete(self, vm: str, snap: str) -> Operation:
        """Delete a snapshot that has no children (``InUseError`` now if it has)."""
        found = await self._find(vm, snap)
        if found.children:
            raise InUseError(
                f"snapshot {snap!r} has child snapshots ({', '.join(found.children)}): "
                "delete them first"
            )

        async def run(ctx: OpContext) -> dict[str, Any]:
            await ctx.progress(10, f"deleting snapshot {snap} of {vm}")
            rec = await self._repo.get(vm)
            await self._host.snapshot_delete(rec.spec.normalized(), snap)
            await self._emit("snapshot.deleted", vm, f"snapshot {snap} deleted")
            return {"instance": vm, "snapshot": snap, "deleted": True}

        return await self._runner.submit("snapshot.delete", f"instance/{vm}", run)

    async def _emit(self, kind: str, vm: str, message: str) -> None:
        await self._events.append(Event(kind=kind, target=f"instance/{vm}", message=message))
