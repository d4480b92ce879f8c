"""Container use cases beyond the shared power verbs: exec, live limits, rootfs snapshots.

Owns the rules (the instance must be a container; exec needs it running; snapshots
need it stopped; new limits must form a valid spec and fit the host, growth of a
container that holds capacity is admitted as a reservation) and keeping the spec in
the store in step with live limit changes. The work itself is done through
``HostOps.containers`` (``hostops.ContainerOps``; host/containers.py on this host). Must
not touch processes or files.
"""

from __future__ import annotations

import builtins
import contextlib
from contextlib import AbstractAsyncContextManager
from typing import Any

from pydantic import ValidationError

from virtfleet.errors import CapacityError, InvalidInputError, InvalidStateError
from virtfleet.hostops import ContainerOps, NoContainers
from virtfleet.model.container import ExecOutput
from virtfleet.model.event import Event
from virtfleet.model.host import HostFacts
from virtfleet.model.instance import InstanceSpec, PowerState
from virtfleet.model.names import validate_name
from virtfleet.model.validation import invalid_input
from virtfleet.service.capacity import CapacityService, counts
from virtfleet.state.repos import EventLog, InstanceRecord, InstanceRepo
from virtfleet.state.store import StateStore

EXEC_MAX_TIMEOUT_S = 600.0
__all__ = ["ContainerOps", "ContainerService", "NoContainers"]


class ContainerService:
    def __init__(
        self,
        store: StateStore,
        ops: ContainerOps,
        facts: HostFacts,
        events: EventLog,
        capacity: CapacityService | None = None,
    ) -> None:
        self._repo = InstanceRepo(store)
        self._ops = ops
        self._facts = facts
        self._events = events
        self.capacity = capacity  # admission of growth, when wired

    async def _container(self, name: str) -> InstanceRecord:
        rec = await self._repo.get(validate_name(name, "instance name"))
        if rec.spec.kind != "container":
            raise InvalidInputError(f"instance {name!r} is a {rec.spec.kind}, not a container")
        return rec

    async def exec(self, name: str, argv: builtins.list[str], timeout_s: float) -> ExecOutput:
        """Run ``argv`` in the running container ``name``; ``InvalidStateError`` otherwise."""
        rec = await self._container(name)
        if not argv or not argv[0]:
            raise InvalidInputError("exec needs a command")
        if not 0 < timeout_s <= EXEC_MAX_TIMEOUT_S:
            raise InvalidInputError(f"timeout_s must be in (0, {EXEC_MAX_TIMEOUT_S:g}]")
        if rec.status.power is not PowerState.RUNNING:
            raise InvalidStateError(rec.status.power.value, "running")
        return await self._ops.exec(name, argv, timeout_s)

    async def set_limits(self, name: str, changes: dict[str, Any]) -> InstanceSpec:
        """Change vcpus / memory_mib / pids_max: live if the container runs, kept in the spec."""
        rec = await self._container(name)
        try:
            spec = InstanceSpec.model_validate({**rec.spec.model_dump(), **changes})
        except ValidationError as err:
            raise invalid_input(err) from err
        if spec.vcpus > self._facts.cpus:
            raise CapacityError(f"{spec.vcpus} CPUs asked, {self._facts.cpus} on this host")
        async with self._admission(rec, spec):  # the written spec is the reservation
            if rec.status.power in (PowerState.RUNNING, PowerState.PAUSED):
                await self._ops.update_limits(name, spec)
            await self._repo.put_spec(spec)
        await self._emit("instance.limits_changed", name, _describe(changes))
        return spec

    def _admission(
        self, rec: InstanceRecord, spec: InstanceSpec
    ) -> AbstractAsyncContextManager[None]:
        """Capacity reserved for more memory or vCPUs while the block applies and writes it."""
        grows = spec.memory_mib > rec.spec.memory_mib or spec.vcpus > rec.spec.vcpus
        if self.capacity is None or not grows or not counts(rec):
            return contextlib.nullcontext()
        return self.capacity.reserving(rec.name, spec.memory_mib, spec.vcpus)

    async def snapshot(self, name: str, snap: str) -> builtins.list[str]:
        await self._stopped(name)
        await self._ops.snapshot(name, validate_name(snap, "snapshot name"))
        await self._emit("instance.snapshot_created", name, f"rootfs snapshot {snap}")
        return self._ops.snapshots(name)

    async def restore(self, name: str, snap: str) -> None:
        await self._stopped(name)
        await self._ops.restore(name, validate_name(snap, "snapshot name"))
        await self._emit("instance.snapshot_restored", name, f"rootfs restored from {snap}")

    async def snapshots(self, name: str) -> builtins.list[str]:
        await self._container(name)
        return self._ops.snapshots(name)

    async def delete_snapshot(self, name: str, snap: str) -> None:
        await self._container(name)
        self._ops.delete_snapshot(name, validate_name(snap, "snapshot name"))

    async def _stopped(self, name: str) -> None:
        rec = await self._container(name)
        if rec.status.power not in (PowerState.STOPPED, PowerState.CRASHED):
            raise InvalidStateError(rec.status.power.value, "stopped")

    async def _emit(self, kind: str, name: str, message: str) -> None:
        await self._events.append(Event(kind=kind, target=f"instance/{name}", message=message))


def _describe(changes: dict[str, Any]) -> str:
    return "limits: " + ", ".join(f"{k}={v}" for k, v in sorted(changes.items()))
