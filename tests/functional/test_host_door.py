"""The one door into a host (``virtfleet.hostops.HostOps``, in-process ``LocalHostOps``):
its power calls, its per-instance lock (the agent's own), and snapshot revert as an action
of the host under that lock rather than remote control of the agent's internals."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from virtfleet.app.bootstrap import Platform
from virtfleet.errors import ConflictError, InvalidStateError
from virtfleet.hostops import HostOps
from virtfleet.model.instance import PowerState
from virtfleet.model.network import NetworkSpec

from .fake_containers import with_containers
from .helpers import assert_error, create, wait_op
from .platform import TestDriver


async def _power(platform: Platform, name: str = "demo") -> PowerState:
    return (await platform.agent.repo.get(name)).status.power


async def test_power_calls_through_the_door(
    api: httpx.AsyncClient, platform: Platform, driver: TestDriver, image: str
) -> None:
    """stop/start/pause/resume/restart record the status; repeats of stop and pause are
    no-ops; a call in the wrong state raises InvalidStateError and changes nothing."""
    await create(api, start=True)  # the start records its generation: no reconcile pending
    ops: HostOps = platform.host.ops
    driver.calls.clear()
    await ops.stop_instance("demo")
    await ops.stop_instance("demo")
    assert await _power(platform) is PowerState.STOPPED
    with pytest.raises(InvalidStateError):
        await ops.pause_instance("demo")
    await ops.start_instance("demo")
    assert await _power(platform) is PowerState.RUNNING
    with pytest.raises(InvalidStateError):
        await ops.start_instance("demo")
    await ops.pause_instance("demo")
    await ops.pause_instance("demo")
    assert await _power(platform) is PowerState.PAUSED
    await ops.resume_instance("demo")
    assert await _power(platform) is PowerState.RUNNING
    await ops.restart_instance("demo")
    assert await _power(platform) is PowerState.RUNNING
    assert driver.calls == [
        ("stop", "demo"),
        ("start", "demo"),
        ("pause", "demo"),
        ("resume", "demo"),
        ("stop", "demo"),
        ("start", "demo"),
    ]


async def test_the_doors_lock_is_the_agents(
    api: httpx.AsyncClient, platform: Platform, driver: TestDriver, image: str
) -> None:
    """While the door's lock on an instance is held, the agent does not start it (its
    reconcile waits for the same lock); released, the start goes ahead."""
    await create(api)
    async with platform.host.ops.lock("demo"):
        r = await api.put("/1.0/instances/demo/state", json={"action": "start"})
        assert r.status_code == 202, r.text
        # Bounded look for something that must not happen: the start running meanwhile.
        wait = await api.get(f"/1.0/operations/{r.json()['id']}/wait", params={"timeout_s": 0.5})
        assert wait.json()["status"] == "running", wait.text
        assert ("start", "demo") not in driver.calls
    assert (await wait_op(api, r))["status"] == "success"
    assert await _power(platform) is PowerState.RUNNING


async def test_revert_powers_off_and_on_through_the_agent(
    api: httpx.AsyncClient, platform: Platform, driver: TestDriver, image: str
) -> None:
    """Reverting a running VM stops it, puts its disk back and starts it again, all under
    the instance's lock: a revert waits while the lock is held elsewhere."""
    await create(api, start=True)
    made = await api.post("/1.0/instances/demo/snapshots", json={"name": "s1"})
    assert (await wait_op(api, made))["status"] == "success"
    disk = platform.host.ops.disk_path("demo", "root")
    inode = disk.stat().st_ino
    driver.calls.clear()
    async with platform.host.ops.lock("demo"):
        r = await api.post("/1.0/instances/demo/snapshots/s1/revert")
        assert r.status_code == 202, r.text
        wait = await api.get(f"/1.0/operations/{r.json()['id']}/wait", params={"timeout_s": 0.5})
        assert wait.json()["status"] == "running", wait.text
        assert driver.calls == []
    assert (await wait_op(api, r))["status"] == "success"
    assert driver.calls == [("stop", "demo"), ("start", "demo")]
    assert await _power(platform) is PowerState.RUNNING
    assert disk.stat().st_ino != inode  # a fresh overlay over the snapshot's files


async def test_one_disk_manager(platform: Platform) -> None:
    """The door and the agent share the one DiskManager the composition root built."""
    assert platform.host.ops.disks is platform.agent.disks
    assert platform.host.ops.disk_path("a", "root") == platform.agent.disks.path("a", "root")


async def test_many_door_calls_on_one_instance_never_overlap(
    api: httpx.AsyncClient, platform: Platform, driver: TestDriver, image: str
) -> None:
    """Concurrent pause/resume calls are serialised by the lock: every one sees a settled
    state, so each either acts or is a no-op, never fails half-way."""
    await create(api, start=True)
    ops = platform.host.ops
    await asyncio.gather(*(ops.pause_instance("demo") for _ in range(5)))
    assert await _power(platform) is PowerState.PAUSED
    assert driver.calls.count(("pause", "demo")) == 1


async def test_network_realisation_goes_through_the_door(
    api: httpx.AsyncClient, platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The network service creates a network's host part only through the door: a door
    that refuses it fails the request (409) and nothing is recorded."""

    async def refuse(spec: NetworkSpec) -> None:
        raise ConflictError(f"host cannot make {spec.name}")

    monkeypatch.setattr(platform.host.ops, "network_check", refuse)
    body = {"name": "lan", "subnet": "10.77.0.0/24"}
    assert_error(await api.post("/1.0/networks", json=body), 409, "conflict")
    assert (await api.get("/1.0/networks")).json() == []


async def test_a_container_rootfs_snapshot_waits_for_the_instance_lock(
    api: httpx.AsyncClient, platform: Platform
) -> None:
    """Rootfs snapshots go through the door's container calls, under the instance lock:
    while it is held the snapshot is not taken; released, it is."""
    runtime = with_containers(platform)
    built = await api.post("/1.0/images", json={"name": "ctiny", "builder": "container-tiny"})
    assert (await wait_op(api, built))["status"] == "success"
    await create(api, "c1", kind="container", image="ctiny")
    async with platform.host.ops.lock("c1"):
        task = asyncio.create_task(
            api.post("/1.0/instances/c1/rootfs-snapshots", json={"name": "s"})
        )
        # Bounded look for something that must not happen: the snapshot taken meanwhile.
        done, _ = await asyncio.wait([task], timeout=0.5)
        assert not done and runtime.snaps == {}
    assert (await task).status_code == 201
    assert runtime.snaps == {"c1": ["s"]}
