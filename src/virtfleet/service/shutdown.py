"""Clean host shutdown: every running guest stopped, in the reverse of the boot order.

Owns ``shutdown_guests``: the instances that run (or are paused) stop in descending
``start_order`` groups (a group's members together; the last to start stops
first), each through an ordinary stop operation (ACPI power button or the
container's SIGTERM, forced after ``timeout_s``), or, for VMs whose
``host_shutdown`` is ``suspend`` (and that run), saved with their memory state as
the snapshot ``host-suspend`` and powered off: the boot sequence resumes them from it.
Their desired state becomes stopped, so the next boot starts exactly the autostart
(and suspended) ones. A daemon restart
never calls this; the service unit runs it only when the system goes down.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable
from typing import Any

from virtfleet.errors import DriverError, InvalidInputError, InvalidStateError, VirtfleetError
from virtfleet.model.instance import PowerState
from virtfleet.model.operation import Operation
from virtfleet.service.instances import InstanceService
from virtfleet.service.operations import OpContext, OperationRunner
from virtfleet.service.snapshots import SnapshotService
from virtfleet.state.repos import InstanceRecord, InstanceRepo
from virtfleet.state.store import StateStore

MAX_TIMEOUT_S = 3600.0
SUSPEND_SNAPSHOT = "host-suspend"  # the memory snapshot a suspended VM resumes from
_LIVE = (PowerState.RUNNING, PowerState.PAUSED, PowerState.STARTING)


class ShutdownService:
    def __init__(
        self,
        store: StateStore,
        instances: InstanceService,
        runner: OperationRunner,
        snapshots: SnapshotService | None = None,
    ) -> None:
        self._repo = InstanceRepo(store)
        self._instances = instances
        self._runner = runner
        self.snapshots = snapshots  # None: no suspend (a plain stop)

    async def shutdown_guests(self, timeout_s: float = 60.0) -> Operation:
        """Queue a ``host.shutdown-guests`` operation; its result lists each guest stopped,
        in order, with how long each took."""
        if not 0 < timeout_s <= MAX_TIMEOUT_S:
            raise InvalidInputError(f"timeout_s must be above 0 and at most {MAX_TIMEOUT_S:g}")

        async def run(ctx: OpContext) -> dict[str, Any]:
            live = [r for r in await self._repo.list() if r.status.power in _LIVE]
            ordered = sorted(live, key=lambda r: (r.spec.start_order, r.name), reverse=True)
            groups = [list(g) for _, g in itertools.groupby(ordered, key=_order)]
            stopped: list[dict[str, Any]] = []
            for group in groups:
                await ctx.progress(
                    min(99, 100 * len(stopped) // max(1, len(live))),
                    f"stopping {', '.join(r.name for r in group)}",
                )
                stopped += await asyncio.gather(*(self._stop(r, timeout_s) for r in group))
            return {"guests": stopped}

        return await self._runner.submit("host.shutdown-guests", "host", run)

    async def _stop(self, rec: InstanceRecord, timeout_s: float) -> dict[str, Any]:
        began = time.monotonic()
        entry: dict[str, Any] = {"name": rec.name, "order": rec.spec.start_order}
        if rec.spec.host_shutdown == "suspend" and self.snapshots is not None:
            try:
                await self._suspend(rec, timeout_s)
                entry.update(outcome="suspended", took_s=round(time.monotonic() - began, 3))
                return entry
            except VirtfleetError as err:
                entry["suspend_error"] = err.message  # then stopped like the others
        try:
            await self._wait(
                self._instances.change_state(rec.name, "stop", timeout_s=timeout_s), timeout_s
            )
            entry.update(outcome="stopped", error=None)
        except VirtfleetError as err:
            entry.update(outcome="failed", error=err.message)
        entry["took_s"] = round(time.monotonic() - began, 3)
        return entry

    async def _suspend(self, rec: InstanceRecord, timeout_s: float) -> None:
        """Save memory and disks (live: the guest pauses only for the last round), then
        power off; what the guest does after the save is undone by the resume's revert."""
        assert self.snapshots is not None
        if rec.status.power is not PowerState.RUNNING:
            # A paused guest's saved state loads paused, and the resume waits for it to run.
            raise InvalidStateError(rec.status.power.value, "running")
        await self._wait(self.snapshots.create(rec.name, SUSPEND_SNAPSHOT, memory=True), 600)
        await self._wait(self._instances.change_state(rec.name, "stop", force=True), timeout_s)

    async def _wait(self, submitted: Awaitable[Operation], timeout_s: float) -> Operation:
        """Submit, wait, and raise the operation's error if it did not succeed."""
        op = await self._runner.wait((await submitted).id, timeout_s + 60)
        if op.status.value != "success":
            raise DriverError(op.error_message or f"{op.kind} ended {op.status.value}")
        return op


def _order(rec: InstanceRecord) -> int:
    return rec.spec.start_order
