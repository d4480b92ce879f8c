"""Backup schedules on a fake clock: cron validation, due runs, the prune after each backup,
and a failed backup recorded on the schedule. The backup service is a recording stand-in
(the real one is covered by the integration tests)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest

from virtfleet.errors import InvalidInputError, NotFoundError
from virtfleet.model.backup import Schedule
from virtfleet.model.instance import DesiredState, InstanceSpec
from virtfleet.model.operation import Operation, OperationStatus
from virtfleet.service.backups import BackupService
from virtfleet.service.schedules import ScheduleService, next_run
from virtfleet.state.leader import Leadership
from virtfleet.state.memory import MemoryStore
from virtfleet.state.repos import InstanceRepo
from virtfleet.storage.backup.prune import RetentionPolicy

from ..yielding import yielding


class FakeBackups:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.fail = False
        self.backed_up = asyncio.Event()

    async def create(self, vm: str, full: bool = False) -> Operation:
        self.calls.append(("backup", vm))
        self.backed_up.set()
        return Operation(id=f"b{len(self.calls)}", kind="backup.create", target=vm)

    async def prune(self, vm: str | None, policy: RetentionPolicy) -> Operation:
        self.calls.append(("prune", policy.last))
        return Operation(id=f"p{len(self.calls)}", kind="backup.prune", target="backups")

    async def wait(self, op_id: str, timeout_s: float) -> Operation:
        status = OperationStatus.FAILURE if self.fail else OperationStatus.SUCCESS
        return Operation(id=op_id, kind="x", target="x", status=status, message="disk on fire")


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 5, 1, 2, 30, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
async def setup() -> tuple[ScheduleService, FakeBackups, Clock]:
    store = MemoryStore()
    await InstanceRepo(store).create(InstanceSpec(name="vm1", image="tiny"), DesiredState())
    fake, clock = FakeBackups(), Clock()
    return ScheduleService(store, cast(BackupService, fake), clock), fake, clock


async def test_runs_when_due_then_prunes(setup: tuple[ScheduleService, FakeBackups, Clock]) -> None:
    svc, fake, clock = setup
    await svc.put(Schedule(name="nightly", instance="vm1", cron="0 3 * * *", keep_last=7))
    assert await svc.tick() == [] and fake.calls == []
    clock.now += timedelta(minutes=31)  # 03:01
    assert await svc.tick() == ["nightly"]
    assert fake.calls == [("backup", "vm1"), ("prune", 7)]
    assert await svc.tick() == []  # not again until tomorrow
    [s] = await svc.list()
    assert s.last_status == "success" and next_run(s) == datetime(2026, 5, 2, 3, tzinfo=UTC)


async def test_failed_backup_is_recorded(setup: tuple[ScheduleService, FakeBackups, Clock]) -> None:
    svc, fake, clock = setup
    fake.fail = True
    await svc.put(Schedule(name="hourly", instance="vm1", cron="0 * * * *"))
    clock.now += timedelta(hours=1)
    await svc.tick()
    [s] = await svc.list()
    assert s.last_status == "disk on fire" and fake.calls == [("backup", "vm1")]


async def test_bad_schedules(setup: tuple[ScheduleService, FakeBackups, Clock]) -> None:
    svc, _, _ = setup
    for cron in ("61 * * * *", "* * *", "daily", "* * * * * *"):
        with pytest.raises(InvalidInputError):
            await svc.put(Schedule(name="x", instance="vm1", cron=cron))
    with pytest.raises(NotFoundError):
        await svc.put(Schedule(name="x", instance="nope", cron="0 3 * * *"))
    with pytest.raises(NotFoundError):
        await svc.delete("x")
    assert await svc.list() == []


async def test_two_schedulers_on_one_store_run_a_due_time_once() -> None:
    """Two daemons tick at once on one (yielding) store: the due backup runs exactly once,
    and neither runs it again on its next tick."""
    store = yielding(MemoryStore())
    await InstanceRepo(store).create(InstanceSpec(name="vm1", image="tiny"), DesiredState())
    fake, clock = FakeBackups(), Clock()
    daemons = [ScheduleService(store, cast(BackupService, fake), clock) for _ in range(2)]
    await daemons[0].put(Schedule(name="nightly", instance="vm1", cron="0 3 * * *"))
    clock.now += timedelta(minutes=31)
    ran = await asyncio.gather(*(d.tick() for d in daemons))
    assert sorted(ran) == [[], ["nightly"]]
    assert fake.calls == [("backup", "vm1")]
    assert await asyncio.gather(*(d.tick() for d in daemons)) == [[], []]
    [s] = await daemons[1].list()
    assert s.last_status == "success"


async def test_only_the_leader_ticks() -> None:
    """With a leader elected, a follower's tick runs nothing; the leader's runs the
    schedule; once the leader resigns the other daemon takes over."""
    store = MemoryStore()
    await InstanceRepo(store).create(InstanceSpec(name="vm1", image="tiny"), DesiredState())
    fake, clock = FakeBackups(), Clock()
    leaders = [Leadership(store, "schedules", f"host{i}") for i in range(2)]
    daemons = [ScheduleService(store, cast(BackupService, fake), clock, lead) for lead in leaders]
    leaders[0].start()
    await leaders[0].wait_elected()
    leaders[1].start()
    await daemons[0].put(Schedule(name="hourly", instance="vm1", cron="0 * * * *"))
    clock.now += timedelta(hours=1)
    assert await daemons[1].tick() == []
    assert await daemons[0].tick() == ["hourly"]
    await leaders[0].stop()
    await asyncio.wait_for(leaders[1].wait_elected(), 5)
    clock.now += timedelta(hours=1)
    assert await daemons[0].tick() == []
    assert await daemons[1].tick() == ["hourly"]
    assert fake.calls == [("backup", "vm1")] * 2
    await leaders[1].stop()
    await store.close()


class WatchedClock(Clock):
    """A clock that says when it was last read (the loop's look for due schedules)."""

    def __init__(self) -> None:
        super().__init__()
        self.read = asyncio.Event()

    def __call__(self) -> datetime:
        self.read.set()
        return self.now


async def test_the_loop_looks_again_every_tick_s() -> None:
    """A schedule that became due after the loop's first look runs at its next look,
    ``tick_s`` later (the lab ticks every second to see a leader's run within seconds)."""
    store = MemoryStore()
    await InstanceRepo(store).create(InstanceSpec(name="vm1", image="tiny"), DesiredState())
    fake, clock = FakeBackups(), WatchedClock()
    svc = ScheduleService(store, cast(BackupService, fake), clock, tick_s=0.05)
    await svc.put(Schedule(name="hourly", instance="vm1", cron="0 * * * *"))
    clock.read.clear()
    svc.start()
    try:
        await asyncio.wait_for(clock.read.wait(), 5)  # the first look: nothing due yet
        clock.now += timedelta(hours=1)
        await asyncio.wait_for(fake.backed_up.wait(), 5)  # the default 20 s tick: timeout
    finally:
        await svc.stop()
    assert fake.calls == [("backup", "vm1")]
