"""Two agents (two host ids) in one process on one store: each acts only on the instances
it owns, and an ownership move (an epoch bump by transaction) hands a running instance
over without ever running it on both hosts at once."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.functional.helpers import act, create
from tests.functional.platform import FACTS, TestDriver
from virtfleet.app.bootstrap import Platform
from virtfleet.host.agent import Agent, AgentConfig
from virtfleet.host.disks import DiskManager
from virtfleet.host.member import HostPresence
from virtfleet.model.capacity import OvercommitRatios
from virtfleet.model.instance import InstanceSpec, PowerState
from virtfleet.service.instances import InstanceService
from virtfleet.service.operations import OperationRunner
from virtfleet.state.identity import load_or_create
from virtfleet.state.repos import EventLog, InstanceRepo


@dataclass
class Second:
    """Host B: its own agent, driver, identity and instance service, on A's store."""

    id: str
    agent: Agent
    driver: TestDriver
    instances: InstanceService
    runner: OperationRunner
    member: HostPresence


@contextlib.asynccontextmanager
async def second_host(platform: Platform, tmp: Path) -> AsyncIterator[Second]:
    store, events = platform.store, EventLog(platform.store)
    host = load_or_create(tmp / "b", "host-b")
    (tmp / "b" / "console").mkdir(parents=True)
    driver = TestDriver(tmp / "b" / "console")
    images = platform.services.images.store
    config = AgentConfig(DiskManager(tmp / "b" / "disks", images.file_for), host_id=host.id)
    agent = Agent(store, driver, FACTS, events, config)
    runner = OperationRunner(store, events, host_id=host.id)
    instances = InstanceService(store, images, FACTS, runner, events, 10.0, owner=host.id)
    member = HostPresence(store, host, FACTS, OvercommitRatios(), tmp / "b")
    await member.start()
    await agent.start()
    try:
        yield Second(host.id, agent, driver, instances, runner, member)
    finally:
        await runner.close()
        await agent.stop()
        await member.stop()


async def until(check: Callable[[], Awaitable[bool]], timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not await check():
            await asyncio.sleep(0.01)


async def test_each_agent_acts_only_on_what_it_owns(
    platform: Platform, driver: TestDriver, api: httpx.AsyncClient, image: str, tmp_path: Path
) -> None:
    """Instances created on A run on A, those created on B on B; neither driver is ever
    asked about the other's instances, and every status names the host that wrote it."""
    a_id = platform.agent.host_id
    async with second_host(platform, tmp_path) as b:
        await create(api, "on-a", start=True)
        op = await b.instances.create(_spec("on-b"), start=True)
        assert (await b.runner.wait(op.id, 10)).status.value == "success"
        await act(api, "on-b", "stop")  # a request through A's API: only B carries it out
        await act(api, "on-a", "stop")
        recs = {r.name: r for r in await InstanceRepo(platform.store).list()}
        view = (await api.get("/1.0/instances/on-b")).json()
    assert {n for _, n in driver.calls} == {"on-a"}
    assert {n for _, n in b.driver.calls} == {"on-b"}
    assert recs["on-a"].owner is not None and recs["on-a"].owner.host == a_id
    assert recs["on-b"].owner is not None and recs["on-b"].owner.host == b.id
    assert (recs["on-a"].status.host, recs["on-b"].status.host) == (a_id, b.id)
    assert view["owner"] == {"host": b.id, "epoch": 1}
    assert view["status"]["power"] == "stopped"


async def test_moving_ownership_hands_a_running_instance_over(
    platform: Platform, driver: TestDriver, api: httpx.AsyncClient, image: str, tmp_path: Path
) -> None:
    """Moving a running instance from A to B (epoch 1 -> 2 by transaction) while A still
    runs it: A stops its copy and records why, then B starts it; at no sampled moment do
    both drivers run it."""
    repo = InstanceRepo(platform.store)
    async with second_host(platform, tmp_path) as b:
        await create(api, "mover", start=True)
        assert await driver.list() == ["mover"]
        both: list[bool] = []
        done = asyncio.Event()

        async def sample() -> None:
            while not done.is_set():
                both.append("mover" in await driver.list() and "mover" in await b.driver.list())
                await asyncio.sleep(0)

        sampler = asyncio.create_task(sample())
        stopping, release = asyncio.Event(), asyncio.Event()
        stop = driver.stop

        async def slow_stop(name: str, *, force: bool = False, timeout_s: float = 30.0) -> None:
            stopping.set()  # A's copy keeps running until the test lets the stop go on
            await release.wait()
            await stop(name, force=force, timeout_s=timeout_s)

        driver.stop = slow_stop  # type: ignore[method-assign]
        owner, revision = await repo.owner("mover")
        moved = await repo.move_owner("mover", b.id, revision)
        await stopping.wait()
        # B either starts its copy at once (wrong) or waits for A's (right): see which.
        decided = _true_after(
            lambda: ("start", "mover") in b.driver.calls or "mover" in b.agent.fences.waiting
        )
        await until(decided)
        started_early = ("start", "mover") in b.driver.calls
        release.set()

        async def on_b() -> bool:
            rec = await repo.get("mover")
            return rec.status.host == b.id and rec.status.power is PowerState.RUNNING

        await until(on_b)
        done.set()
        await sampler
        events = (await api.get("/1.0/events")).json()
    assert owner is not None and owner.epoch == 1
    assert moved is not None and (moved.host, moved.epoch) == (b.id, 2)
    assert not started_early and len(both) > 10 and not any(both)
    assert await driver.list() == [] and await b.driver.list() == ["mover"]
    assert ("stop", "mover") in driver.calls and ("start", "mover") in b.driver.calls
    fenced = [e for e in events if e["kind"] == "instance.fenced"]
    assert fenced and b.id in fenced[0]["message"] and "epoch 2" in fenced[0]["message"]
    assert any(e["kind"] == "instance.taken_over" for e in events)


async def test_a_stale_move_is_refused_and_status_writes_are_fenced(
    platform: Platform, api: httpx.AsyncClient, image: str, tmp_path: Path
) -> None:
    """The epoch only moves by a transaction on the revision read (a second move on the
    same read fails), and a status write under the old ownership writes nothing."""
    repo = InstanceRepo(platform.store)
    await create(api, "fenced")
    rec = await repo.get("fenced")
    assert await repo.move_owner("fenced", "some-other-host", rec.owner_revision) is not None
    assert await repo.move_owner("fenced", "a-third-host", rec.owner_revision) is None
    stale = rec.status.model_copy(update={"reason": "stale write"})
    assert not await repo.put_status_owned("fenced", stale, rec.owner_revision)
    after = await repo.get("fenced")
    assert after.owner is not None and after.owner.host == "some-other-host"
    assert after.owner.epoch == 2 and after.status.reason != "stale write"


async def test_an_agent_never_adopts_or_stops_what_it_does_not_own(
    platform: Platform, driver: TestDriver, api: httpx.AsyncClient, image: str, tmp_path: Path
) -> None:
    """B starting up on a store where A runs an instance leaves it alone: no driver call,
    no status write (A's status stays A's)."""
    await create(api, "mine", start=True)
    before = await InstanceRepo(platform.store).get("mine")
    async with second_host(platform, tmp_path) as b:
        await b.agent.stop()  # restart B's agent: its start-up pass sees A's record
        await b.agent.start()
        after = await InstanceRepo(platform.store).get("mine")
    assert b.driver.calls == []
    assert after.status_revision == before.status_revision
    assert after.status.host == platform.agent.host_id


def _true_after(condition: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return condition()

    return check


def _spec(name: str) -> InstanceSpec:
    return InstanceSpec(name=name, image="tiny")


async def test_an_owner_down_at_the_move_takes_over_when_it_starts(
    platform: Platform, driver: TestDriver, api: httpx.AsyncClient, image: str, tmp_path: Path
) -> None:
    """An instance moved to B while B's agent was down (A stopped its copy meanwhile) is
    started by B's agent when it comes up: a new owner carries out the desired state
    whatever generation the previous owner had observed."""
    repo = InstanceRepo(platform.store)
    async with second_host(platform, tmp_path) as b:
        await b.agent.stop()
        await create(api, "later", start=True)
        rec = await repo.get("later")
        assert await repo.move_owner("later", b.id, rec.owner_revision) is not None

        async def released() -> bool:
            return (await repo.get("later")).status.power is PowerState.STOPPED

        await until(released)  # A fenced its copy off
        await b.agent.start()

        async def on_b() -> bool:
            rec = await repo.get("later")
            return rec.status.host == b.id and rec.status.power is PowerState.RUNNING

        await until(on_b)
    assert await driver.list() == [] and await b.driver.list() == ["later"]
