"""The agent's reaction to exits nobody asked for: restart policies, crash events, backoff."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest

from virtfleet.api.auth import local_admin
from virtfleet.app.bootstrap import Platform
from virtfleet.host import agent as agent_module
from virtfleet.service.waiting import wait_until
from virtfleet.state.keys import instance_key, instance_prefix
from virtfleet.state.repos import InstanceRepo

from .helpers import act, create, wait_op
from .platform import TestDriver, make_platform, running


async def _power(api: httpx.AsyncClient, name: str) -> dict[str, object]:
    return dict((await api.get(f"/1.0/instances/{name}")).json()["status"])


async def _until(api: httpx.AsyncClient, name: str, power: str, restarts: int = 0) -> None:
    async with asyncio.timeout(10):
        while True:
            status = await _power(api, name)
            if status["power"] == power and status["restarts"] == restarts:
                return
            await asyncio.sleep(0.02)


@pytest.fixture(autouse=True)
def _tiny(image: str) -> str:
    """Every test here needs the (stand-in) tiny image."""
    return image


def _driver(platform: Platform) -> TestDriver:
    assert isinstance(platform.driver, TestDriver)
    return platform.driver


async def test_on_failure_restarts_a_crashed_instance(
    api: httpx.AsyncClient, platform: Platform
) -> None:
    """A crash under on-failure is recorded, then the agent starts the instance again."""
    await create(api, "a", start=True, restart_policy="on-failure")
    _driver(platform).crash("a")
    await _until(api, "a", "running", restarts=1)
    kinds = [e["kind"] for e in (await api.get("/1.0/events")).json()]
    assert "instance.crashed" in kinds and "instance.restarted" in kinds


async def test_policy_no_leaves_a_crashed_instance_crashed(
    api: httpx.AsyncClient, platform: Platform
) -> None:
    """Under policy 'no' a crash is final until someone starts the instance."""
    await create(api, "b", start=True)
    _driver(platform).crash("b")
    await _until(api, "b", "crashed")
    await asyncio.sleep(0.7)  # longer than the first backoff step
    assert (await _power(api, "b"))["power"] == "crashed"
    assert (await act(api, "b", "start"))["status"] == "success"


async def test_guest_poweroff_is_not_a_failure(api: httpx.AsyncClient, platform: Platform) -> None:
    """A guest that powers itself off is stopped under on-failure, restarted under always."""
    await create(api, "calm", start=True, restart_policy="on-failure")
    await create(api, "busy", start=True, restart_policy="always")
    _driver(platform).guest_poweroff("calm")
    _driver(platform).guest_poweroff("busy")
    await _until(api, "calm", "stopped")
    await _until(api, "busy", "running", restarts=1)


async def test_an_exit_code_is_recorded_and_drives_on_failure(
    api: httpx.AsyncClient, platform: Platform
) -> None:
    """An application's exit code lands in the status; under on-failure a non-zero code
    restarts it (the new run has no code yet), a zero code leaves it stopped."""
    await create(api, "app", start=True, restart_policy="on-failure")
    _driver(platform).app_exit("app", 3)
    await _until(api, "app", "running", restarts=1)
    assert (await _power(api, "app"))["exit_code"] is None
    _driver(platform).app_exit("app", 0)
    await _until(api, "app", "stopped", restarts=1)
    status = await _power(api, "app")
    assert (status["exit_code"], status["reason"]) == (0, "application exited with code 0")
    await create(api, "once", start=True)
    _driver(platform).app_exit("once", 3)
    await _until(api, "once", "crashed")
    assert (await _power(api, "once"))["exit_code"] == 3


async def test_requested_stop_is_never_restarted(
    api: httpx.AsyncClient, platform: Platform
) -> None:
    """A stop through the API stays stopped even under policy always."""
    await create(api, "s", start=True, restart_policy="always")
    assert (await act(api, "s", "stop"))["status"] == "success"
    await asyncio.sleep(0.7)
    status = await _power(api, "s")
    assert status["power"] == "stopped" and status["restarts"] == 0


async def test_a_stop_keeps_a_crashed_instance_down_while_its_restart_waits(
    api: httpx.AsyncClient, platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash under on-failure schedules a restart after a backoff; a stop meanwhile is
    accepted (not "instance is crashed") and the restart does not happen."""
    monkeypatch.setattr(agent_module, "BACKOFF_S", (1.5,))  # room for the stop, on any load
    await create(api, "c", start=True, restart_policy="on-failure")
    _driver(platform).crash("c")
    await _until(api, "c", "crashed")
    assert (await act(api, "c", "stop"))["status"] == "success"
    await asyncio.sleep(1.7)
    status = await _power(api, "c")
    assert (status["power"], status["restarts"]) == ("crashed", 0), status
    assert (await act(api, "c", "start"))["status"] == "success"


async def test_agent_stop_leaves_no_empty_cgroups(tmp_path: Path) -> None:
    """At agent stop the cgroups of running instances with no process in them (here: the
    fake driver's) and then the empty parent are removed (a restarted agent makes the
    cgroup of an instance it adopts again)."""
    platform, _ = make_platform(tmp_path)
    manager = platform.agent.cgroups
    if manager is None or not manager.available:
        pytest.skip("needs root and cgroups")
    parents = set(manager._parent_dirs().values())
    async with running(platform):
        transport = httpx.ASGITransport(app=local_admin(platform.app))
        async with httpx.AsyncClient(transport=transport, base_url="http://vf") as api:
            built = await wait_op(api, await api.post("/1.0/images", json={"name": "tiny"}))
            assert built["status"] == "success"
            await create(api, "cg", start=True)
            assert all((parent / "cg").is_dir() for parent in parents)
    assert not any(parent.exists() for parent in parents)


async def _observed(platform: Platform, name: str, generation: int) -> None:
    """Wait until the agent recorded ``name``'s desired ``generation`` as carried out."""
    repo = InstanceRepo(platform.store)

    async def seen() -> bool | None:
        return (await repo.get(name)).status.observed_generation >= generation or None

    assert await wait_until(platform.store, instance_prefix(name), seen, 5.0)


async def _powers_written(platform: Platform, name: str, after: int) -> list[str]:
    """The powers ``name``'s status went through after store revision ``after``."""
    key = instance_key(name, "status")
    seen: list[str] = []
    watch = platform.store.watch(key, after)
    try:
        async with asyncio.timeout(0.2):
            async for change in watch:
                power = json.loads(change.value or b"{}").get("power")
                if change.key == key and power and seen[-1:] != [power]:
                    seen.append(power)  # a power once per change of it
    except TimeoutError:
        pass
    return seen


async def test_starting_is_shown_only_for_a_start_still_going(
    api: httpx.AsyncClient, platform: Platform
) -> None:
    """A start over within STARTING_AFTER_S goes stopped -> running with no STARTING write
    (one store write less on a container's ~30 ms start); a slower one shows STARTING
    while it goes on."""
    await create(api, "quick")
    await create(api, "slow")
    for name in ("quick", "slow"):  # the agent's record of the create comes after it
        await _observed(platform, name, 1)
    before = await platform.store.revision()
    await act(api, "quick", "start")
    assert await _powers_written(platform, "quick", before) == ["running"]
    gate = _driver(platform).gates["slow"] = asyncio.Event()
    before = await platform.store.revision()
    r = await api.put("/1.0/instances/slow/state", json={"action": "start"})
    async with asyncio.timeout(5):
        while (await _power(api, "slow"))["power"] != "starting":
            await asyncio.sleep(0.01)
    gate.set()
    await wait_op(api, r)
    assert await _powers_written(platform, "slow", before) == ["starting", "running"]
