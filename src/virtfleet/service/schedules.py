"""Backup schedules: cron expressions run by the daemon, each followed by a retention prune.

Owns schedule records (``/projects/default/backup-schedules/<name>`` in the store), cron
validation (``croniter``), and the loop that submits due backups. A failed
scheduled backup is recorded on the schedule and is an event
(``backup.failed``, from ``BackupService``). Must not know HTTP or QEMU.

A schedule runs exactly once however many daemons share the store: only the
elected leader ticks (state/leader.py), and each run is claimed by a
compare-and-swap of the schedule's ``last_run`` against the revision read, so
even two tickers never both run one due time.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime

from croniter import croniter

from virtfleet.errors import (
    InvalidInputError,
    NotFoundError,
    RevisionConflictError,
    VirtfleetError,
)
from virtfleet.model.backup import Schedule
from virtfleet.model.names import validate_name
from virtfleet.service.backups import BackupService
from virtfleet.state.keys import SCHEDULES
from virtfleet.state.leader import Leadership
from virtfleet.state.repos import InstanceRepo, ModelRepo
from virtfleet.state.store import StateStore
from virtfleet.storage.backup.prune import RetentionPolicy

log = logging.getLogger(__name__)
TICK_S = 20.0


def next_run(schedule: Schedule) -> datetime:
    base = schedule.last_run or schedule.created_at or datetime.now(UTC)
    nxt: datetime = croniter(schedule.cron, base).get_next(datetime)
    return nxt


def check_cron(cron: str) -> str:
    """``cron`` if it is a valid five-field expression, else ``InvalidInputError``."""
    if len(cron.split()) != 5 or not croniter.is_valid(cron):
        raise InvalidInputError(
            f"invalid cron expression {cron!r}: use five fields, e.g. '0 3 * * *'"
        )
    return cron


def upcoming(cron: str, count: int, after: datetime) -> list[datetime]:
    """The next ``count`` times ``cron`` fires after ``after`` (the UI's cron helper)."""
    it = croniter(check_cron(cron), after)
    return [it.get_next(datetime) for _ in range(count)]


class ScheduleService:
    def __init__(
        self,
        store: StateStore,
        backups: BackupService,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        leader: Leadership | None = None,
        tick_s: float = TICK_S,
    ) -> None:
        self._repo = ModelRepo(store, SCHEDULES, Schedule)
        self._instances = InstanceRepo(store)
        self._backups = backups
        self._clock = clock
        self._leader = leader  # None: the only daemon (tests, a store of its own)
        self._tick_s = tick_s  # how often due schedules are looked for
        self._task: asyncio.Task[None] | None = None

    async def list(self) -> builtins.list[Schedule]:
        found = [s for s in await self._repo.values() if isinstance(s, Schedule)]
        return sorted(found, key=lambda s: s.name)

    async def put(self, schedule: Schedule) -> Schedule:
        """Create or replace a schedule; ``InvalidInputError`` for a bad cron expression."""
        validate_name(schedule.name, "schedule name")
        await self._instances.get(validate_name(schedule.instance, "instance name"))
        check_cron(schedule.cron)
        schedule = schedule.model_copy(update={"created_at": self._clock(), "last_run": None})
        await self._repo.put(schedule.name, schedule)
        return schedule

    def next_runs(self, cron: str, count: int) -> builtins.list[datetime]:
        return upcoming(cron, count, self._clock())

    async def delete(self, name: str) -> None:
        if not await self._repo.delete(validate_name(name, "schedule name")):
            raise NotFoundError(f"schedule {name!r} not found")

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="backup-schedules")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while True:
            if self._leader is not None:
                await self._leader.wait_elected()  # a follower waits for its turn to lead
            try:
                await self.tick()
            except Exception:
                log.exception("backup schedule tick failed")
            await asyncio.sleep(self._tick_s)  # a timer, not synchronisation

    async def tick(self) -> builtins.list[str]:
        """Run every due schedule once (a backup, then its prune); names of those run
        (here: a due time another daemon claimed first is not run again)."""
        if self._leader is not None and not self._leader.leading:
            return []
        ran = []
        found = [(s, rev) for s, rev in await self._repo.items() if isinstance(s, Schedule)]
        for schedule, revision in sorted(found, key=lambda i: i[0].name):
            if next_run(schedule) <= self._clock() and await self._run(schedule, revision):
                ran.append(schedule.name)
        return ran

    async def _run(self, s: Schedule, revision: int) -> bool:
        """Claim this due time (compare-and-swap on ``last_run``) and run it; False if
        another daemon claimed it (or the schedule changed) since it was read."""
        s.last_run = self._clock()
        try:  # claimed first: a slow backup is not started twice, nor by two daemons
            revision = await self._repo.put(s.name, s, expect_revision=revision)
        except RevisionConflictError:
            return False
        try:
            op = await self._backups.create(s.instance)
            done = await self._backups.wait(op.id, 24 * 3600)
            if done.status.value != "success":
                raise VirtfleetError(done.message or "backup failed")
            policy = RetentionPolicy(
                last=s.keep_last, daily=s.keep_daily, weekly=s.keep_weekly, monthly=s.keep_monthly
            )
            if not policy.empty():
                pruned = await self._backups.prune(s.instance, policy)
                await self._backups.wait(pruned.id, 3600)
            s.last_status = "success"
        except VirtfleetError as err:
            s.last_status = err.message
        with contextlib.suppress(RevisionConflictError):  # edited or deleted meanwhile
            await self._repo.put(s.name, s, expect_revision=revision)
        return True
