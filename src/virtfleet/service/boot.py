"""Start at boot: the host's boot id, and the ordered start of autostart instances.

Owns the decision "is this daemon start the first since the host booted?" (the
kernel's boot id differs from the one recorded in the store) and, when it is, the
boot sequence: instances with ``autostart`` start in ascending ``start_order``
groups (a group's members together), each group waited for until its members run
and then for the group's largest ``start_delay_s`` (or, when every member has a guest
agent channel, until all their agents answer, the delay at most); instances without it stay
stopped, and their desired state is set to stopped, so a VM never comes back only
because it was running when the power went out. VMs that ``host shutdown-guests``
suspended (snapshot ``host-suspend``) resume from their saved memory in their
group, autostart or not, and the snapshot is dropped. What was started, when and how
long it took is kept as the boot report (``/host/boot``). A plain daemon restart
(same boot id) starts nothing. Power changes go through ``InstanceService``
operations like any user's; nothing here touches processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from virtfleet.errors import DriverError, RevisionConflictError, VirtfleetError
from virtfleet.model.boot import BootEntry, BootReport
from virtfleet.model.instance import DesiredPower, PowerState
from virtfleet.model.operation import Operation
from virtfleet.service.instances import InstanceService
from virtfleet.service.operations import OperationRunner
from virtfleet.service.shutdown import SUSPEND_SNAPSHOT
from virtfleet.service.snapshots import SnapshotService
from virtfleet.state.boot import BootRepo
from virtfleet.state.repos import InstanceRecord, InstanceRepo
from virtfleet.state.store import StateStore

log = logging.getLogger(__name__)
START_TIMEOUT_S = 300.0  # one instance's start, before the sequence moves on without it
AGENT_POLL_S = 1.0  # how often a group's guest agents are asked whether they are up


@dataclass
class Clock:
    """Monotonic time and sleeping, injectable so tests run delays without waiting."""

    now: Callable[[], float] = time.monotonic
    sleep: Callable[[float], Awaitable[None]] = field(default=asyncio.sleep)


class BootService:
    def __init__(
        self,
        store: StateStore,
        instances: InstanceService,
        runner: OperationRunner,
        boot_id: str,
        clock: Clock | None = None,
        *,
        snapshots: SnapshotService | None = None,
        guest_ready: Callable[[str], Awaitable[bool]] | None = None,
    ) -> None:
        self.boot_id = boot_id
        self.clock = clock or Clock()
        self._repo = BootRepo(store)
        self._instances_repo = InstanceRepo(store)
        self._instances = instances
        self._runner = runner
        self._report: BootReport | None = None
        self._task: asyncio.Task[None] | None = None
        self.snapshots = snapshots  # None: nothing is ever resumed
        # Whether a VM's guest agent answers; None: never asked (fixed delays only).
        self.guest_ready = guest_ready

    async def detect(self) -> bool:
        """Record this daemon start; True if it is the first since a new host boot. A store
        without a boot record (a new or upgraded one) counts as the same boot: what runs
        was not started by a boot sequence, and is left as it is."""
        last = await self._repo.get()
        new = last is not None and last.boot_id != self.boot_id
        if last is not None and not new:
            self._report = last  # a daemon restart: the report of this boot stands
            return False
        self._report = BootReport(boot_id=self.boot_id, new_boot=new, detected_at=_now())
        await self._repo.put(self._report)
        return new

    def begin(self) -> None:
        """Run the boot sequence in the background if ``detect`` saw a new boot, or this
        boot's sequence never finished (the daemon died during it: it goes on)."""
        if self._report is not None and self._report.new_boot and self._report.finished_at is None:
            self._task = asyncio.create_task(self._sequence(), name="boot-sequence")

    async def finished(self) -> BootReport:
        """The report once the sequence (if one runs) is over."""
        if self._task is not None:
            await asyncio.shield(self._task)
        return await self.report()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def report(self) -> BootReport:
        return (await self._repo.get()) or BootReport(boot_id=self.boot_id, detected_at=_now())

    async def _sequence(self) -> None:
        assert self._report is not None
        report = self._report
        # What runs already was started by an interrupted run of this sequence: left alone.
        records = [r for r in await self._instances_repo.list() if r.status.power not in _LIVE]
        suspended = {r.name for r in records if await self._suspended(r)}
        for rec in records:
            wanted_before = rec.desired.power in _RUNNING and rec.name not in suspended
            if wanted_before and not rec.spec.autostart:
                await self._settle_stopped(rec)
                report.left_stopped.append(rec.name)
        await self._repo.put(report)
        wanted = [r for r in records if r.spec.autostart or r.name in suspended]
        wanted.sort(key=_order)
        groups = [list(g) for _, g in itertools.groupby(wanted, key=lambda r: r.spec.start_order)]
        began = self.clock.now()
        for index, group in enumerate(groups):
            delay = max(r.spec.start_delay_s for r in group)
            entries = await asyncio.gather(
                *(self._start(r, began, delay, r.name in suspended) for r in group)
            )
            report.entries.extend(entries)
            await self._repo.put(report)
            if delay and index < len(groups) - 1:
                await self._between_groups(group, entries, delay)
                await self._repo.put(report)  # when the guest agents answered
        report.finished_at = _now()
        await self._repo.put(report)
        log.info("boot sequence: started %d instance(s)", len(report.entries))

    async def _start(
        self, rec: InstanceRecord, began: float, delay: float, resume: bool
    ) -> BootEntry:
        at = self.clock.now()
        entry = BootEntry(
            name=rec.name,
            kind=rec.spec.kind,
            order=rec.spec.start_order,
            action="resume" if resume else "start",
            at_s=round(at - began, 3),
            delay_s=delay,
            began=at,
        )
        try:
            if resume:
                await self._resume(rec)
            else:
                await self._wait(self._instances.change_state(rec.name, "start"))
        except VirtfleetError as err:
            entry.outcome, entry.error = "failed", err.message
        entry.took_s = round(self.clock.now() - at, 3)
        if entry.error:
            log.warning("boot sequence: %s did not start: %s", rec.name, entry.error)
        return entry

    async def _between_groups(
        self, group: list[InstanceRecord], entries: list[BootEntry], delay: float
    ) -> None:
        """Wait ``delay``; when every member started with a guest agent channel, only until
        all their agents answer (the guests are up), ``delay`` at most."""
        agents = [e for r, e in zip(group, entries, strict=True) if r.spec.guest_agent]
        if self.guest_ready is None or len(agents) != len(group):
            await self.clock.sleep(delay)
            return
        pending = [e for e in agents if e.outcome == "started"]
        deadline = self.clock.now() + delay
        while self.clock.now() < deadline:
            for entry in list(pending):
                if await self.guest_ready(entry.name):
                    entry.agent_ready_s = round(self.clock.now() - entry.began, 3)
                    pending.remove(entry)
            if not pending:
                return
            await self.clock.sleep(min(AGENT_POLL_S, deadline - self.clock.now()))

    async def _suspended(self, rec: InstanceRecord) -> bool:
        if self.snapshots is None or rec.spec.kind != "vm":
            return False
        return any(s.name == SUSPEND_SNAPSHOT for s in await self.snapshots.list(rec.name))

    async def _resume(self, rec: InstanceRecord) -> None:
        """Start from the saved memory, drop the snapshot, and want it running from now."""
        assert self.snapshots is not None
        await self._wait(self.snapshots.revert(rec.name, SUSPEND_SNAPSHOT))
        await self._wait(self.snapshots.delete(rec.name, SUSPEND_SNAPSHOT))
        rec = await self._instances_repo.get(rec.name)
        gen = max(rec.desired.generation, rec.status.observed_generation) + 1
        desired = rec.desired.model_copy(update={"power": DesiredPower.RUNNING, "generation": gen})
        await self._instances_repo.put_desired(rec.name, desired, rec.desired_revision)

    async def _wait(self, submitted: Awaitable[Operation]) -> None:
        op = await self._runner.wait((await submitted).id, START_TIMEOUT_S)
        if op.status.value != "success":
            raise DriverError(op.error_message or f"{op.kind} ended {op.status.value}")

    async def _settle_stopped(self, rec: InstanceRecord) -> None:
        """Desired stopped (a new generation the agent observes at once: it is stopped)."""
        gen = max(rec.desired.generation, rec.status.observed_generation) + 1
        desired = rec.desired.model_copy(update={"power": DesiredPower.STOPPED, "generation": gen})
        with contextlib.suppress(RevisionConflictError):  # someone asked for something: theirs
            await self._instances_repo.put_desired(rec.name, desired, rec.desired_revision)


_RUNNING = (DesiredPower.RUNNING, DesiredPower.PAUSED)
_LIVE = (PowerState.RUNNING, PowerState.PAUSED, PowerState.STARTING)


def _order(rec: InstanceRecord) -> tuple[int, str]:
    return rec.spec.start_order, rec.name


def _now() -> datetime:
    return datetime.now(UTC)
