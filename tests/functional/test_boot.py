"""Start at boot (service/boot.py) on the fake driver: a new kernel boot id starts exactly
the autostart instances, in start_order groups with their delays (a fake clock), and
the boot report says so; a plain daemon restart starts nothing."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx

from tests.functional.helpers import act, create
from tests.functional.platform import FACTS, TestDriver, fake_build, running
from virtfleet.api.auth import local_admin
from virtfleet.app.bootstrap import Platform, build_platform
from virtfleet.app.settings import Settings
from virtfleet.drivers.base import LaunchContext
from virtfleet.errors import ProcessError
from virtfleet.model.instance import InstanceSpec, InstanceStatus
from virtfleet.service.boot import Clock


class FailingDriver(TestDriver):
    """Instance ``c`` cannot start (its QEMU would exit at once)."""

    __test__ = False

    async def start(self, spec: InstanceSpec, ctx: LaunchContext) -> InstanceStatus:
        if spec.name == "c":
            raise ProcessError("qemu exited with status 1")
        return await super().start(spec, ctx)


class FakeClock:
    """Monotonic time that moves only when the boot sequence sleeps."""

    def __init__(self) -> None:
        self.t = 100.0
        self.slept: list[float] = []

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.t += seconds
        await asyncio.sleep(0)


def boot_platform(
    tmp: Path, boot_id: str, driver: TestDriver | None = None, clock: FakeClock | None = None
) -> tuple[Platform, TestDriver]:
    """The daemon on the SQLite store in ``tmp`` as if the kernel's boot id were ``boot_id``;
    ``driver``: the previous one (its instances still run: no reboot), else a new one."""
    (tmp / "console").mkdir(exist_ok=True)
    settings = Settings(data_dir=tmp, cache_dir=tmp / "cache", store="sqlite", driver="fake")
    settings.boot_id = boot_id
    settings.cpu_overcommit, settings.memory_overcommit = 16.0, 4.0
    platform = build_platform(settings, facts=FACTS)
    driver = driver or TestDriver(tmp / "console")
    platform.driver = platform.agent.driver = driver
    platform.services.images.store.add_builder("tiny", lambda: fake_build)
    platform.services.instances.wait_timeout_s = 10.0
    assert platform.services.boot is not None
    if clock is not None:
        platform.services.boot.clock = Clock(now=clock.now, sleep=clock.sleep)
    return platform, driver


def client(platform: Platform) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=local_admin(platform.app))
    return httpx.AsyncClient(transport=transport, base_url="http://virtfleet")


async def _setup(tmp: Path) -> TestDriver:
    """Boot 1: six instances; a to e run (e with restart policy always but no autostart)."""
    platform, driver = boot_platform(tmp, "boot-1")
    policies: dict[str, dict[str, Any]] = {
        "a": {"autostart": True, "start_order": 1, "start_delay_s": 5},
        "b": {"autostart": True, "start_order": 1, "start_delay_s": 2},
        "c": {"autostart": True, "start_order": 2, "start_delay_s": 3},
        "d": {"autostart": True, "start_order": 3, "start_delay_s": 7},
        "e": {"restart_policy": "always"},
        "f": {"autostart": False},
    }
    async with running(platform), client(platform) as api:
        r = await api.post("/1.0/images", json={"name": "tiny"})
        await api.get(f"/1.0/operations/{r.json()['id']}/wait", params={"timeout_s": 10})
        for name, policy in policies.items():
            await create(api, name, start=name != "f", **policy)
    return driver


async def test_new_boot_starts_autostart_instances_in_order(tmp_path: Path) -> None:
    """After a host reboot (new boot id, nothing running) groups start in start_order, the
    sequence waits each group's largest delay, e (running before, no autostart) stays
    stopped with desired stopped, and the boot report lists it all."""
    await _setup(tmp_path)
    clock = FakeClock()
    platform, driver = boot_platform(tmp_path, "boot-2", clock=clock)
    assert platform.services.boot is not None
    async with running(platform), client(platform) as api:
        report = await platform.services.boot.finished()
        starts = [name for call, name in driver.calls if call == "start"]
        assert sorted(starts[:2]) == ["a", "b"] and starts[2:] == ["c", "d"]
        assert clock.slept == [5, 3]  # after group 1 (max of 5 and 2), group 2; not the last
        body = (await api.get("/1.0/host/boot-report")).json()
        states = {i["name"]: i["status"]["power"] for i in (await api.get("/1.0/instances")).json()}
        e = (await api.get("/1.0/instances/e")).json()
    assert body["new_boot"] is True and body["boot_id"] == "boot-2" and body["finished_at"]
    assert [(x["name"], x["order"], x["at_s"], x["outcome"]) for x in body["entries"]] == [
        ("a", 1, 0.0, "started"),
        ("b", 1, 0.0, "started"),
        ("c", 2, 5.0, "started"),
        ("d", 3, 8.0, "started"),
    ]
    assert body["left_stopped"] == ["e"] and report.left_stopped == ["e"]
    assert states == dict(
        a="running", b="running", c="running", d="running", e="stopped", f="stopped"
    )
    assert e["desired"]["power"] == "stopped" and e["status"]["reason"] == "host rebooted"


async def test_daemon_restart_starts_nothing(tmp_path: Path) -> None:
    """A daemon restart in the same boot (same id, instances still running) starts and
    stops nothing, and the boot report of the boot stands."""
    driver = await _setup(tmp_path)
    platform, driver = boot_platform(tmp_path, "boot-1", driver=driver, clock=FakeClock())
    driver.calls.clear()
    assert platform.services.boot is not None
    async with running(platform), client(platform) as api:
        report = await platform.services.boot.finished()
        states = {i["name"]: i["status"]["power"] for i in (await api.get("/1.0/instances")).json()}
    assert driver.calls == []
    assert report.new_boot is False and report.entries == []
    assert states == dict(
        a="running", b="running", c="running", d="running", e="running", f="stopped"
    )


async def test_failed_start_is_reported_and_the_sequence_goes_on(tmp_path: Path) -> None:
    """An autostart instance that cannot start is reported failed; later groups still start."""
    await _setup(tmp_path)
    driver = FailingDriver(tmp_path / "console")
    platform, driver = boot_platform(tmp_path, "boot-2", driver=driver, clock=FakeClock())
    assert platform.services.boot is not None
    async with running(platform):
        report = await platform.services.boot.finished()
    outcome = {e.name: (e.outcome, bool(e.error)) for e in report.entries}
    assert outcome["c"] == ("failed", True) and outcome["d"] == ("started", False)


async def test_shutdown_guests_stops_in_reverse_order(tmp_path: Path) -> None:
    """host shutdown-guests stops the running guests highest start_order first (d, c, then
    a and b together, e last of all at order 0), f untouched; the next boot starts the
    autostart ones again and not e."""
    driver = await _setup(tmp_path)
    platform, driver = boot_platform(tmp_path, "boot-1", driver=driver, clock=FakeClock())
    driver.calls.clear()
    async with running(platform), client(platform) as api:
        r = await api.post("/1.0/host/shutdown-guests", json={"timeout_s": 5})
        assert r.status_code == 202, r.text
        op = (
            await api.get(f"/1.0/operations/{r.json()['id']}/wait", params={"timeout_s": 10})
        ).json()
        states = {i["name"]: i["status"]["power"] for i in (await api.get("/1.0/instances")).json()}
        bad = await api.post("/1.0/host/shutdown-guests", json={"timeout_s": 0})
    assert op["status"] == "success", op
    stops = [name for call, name in driver.calls if call == "stop"]
    assert stops[:2] == ["d", "c"] and sorted(stops[2:4]) == ["a", "b"] and stops[4:] == ["e"]
    assert [g["name"] for g in op["result"]["guests"]][:2] == ["d", "c"]
    assert set(states.values()) == {"stopped"}
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_input"
    platform, driver = boot_platform(tmp_path, "boot-2", clock=FakeClock())
    assert platform.services.boot is not None
    async with running(platform):
        report = await platform.services.boot.finished()
    assert [e.name for e in report.entries] == ["a", "b", "c", "d"] and report.left_stopped == []


async def test_template_carries_the_boot_policy(tmp_path: Path) -> None:
    """A template's defaults set autostart, start order and delay for its clones; the clone
    request still wins field by field."""
    platform, _ = boot_platform(tmp_path, "boot-1")
    async with running(platform), client(platform) as api:
        r = await api.post("/1.0/images", json={"name": "tiny"})
        await api.get(f"/1.0/operations/{r.json()['id']}/wait", params={"timeout_s": 10})
        defaults = {"autostart": True, "start_order": 4, "start_delay_s": 9}
        body = {"name": "tpl", "image": "tiny", "defaults": defaults}
        r = await api.post("/1.0/templates", json=body)
        op = (
            await api.get(f"/1.0/operations/{r.json()['id']}/wait", params={"timeout_s": 10})
        ).json()
        assert op["status"] == "success", op
        r = await api.post("/1.0/templates/tpl/instances", json={"names": ["k-1"]})
        await api.get(f"/1.0/operations/{r.json()['id']}/wait", params={"timeout_s": 10})
        spec = (await api.get("/1.0/instances/k-1")).json()["spec"]
    assert (spec["autostart"], spec["start_order"], spec["start_delay_s"]) == (True, 4, 9)


async def test_policy_is_patched_and_validated(tmp_path: Path) -> None:
    """PATCH sets the policy (no pending change on a running VM); a container cannot be
    suspended at host shutdown (one-line invalid_input, nothing changed)."""
    platform, _ = boot_platform(tmp_path, "boot-1")
    async with running(platform), client(platform) as api:
        r = await api.post("/1.0/images", json={"name": "tiny"})
        await api.get(f"/1.0/operations/{r.json()['id']}/wait", params={"timeout_s": 10})
        await create(api, "v", start=True)
        r = await api.patch("/1.0/instances/v", json={"autostart": True, "start_order": 2})
        op = (
            await api.get(f"/1.0/operations/{r.json()['id']}/wait", params={"timeout_s": 10})
        ).json()
        v = (await api.get("/1.0/instances/v")).json()
        bad = await api.post(
            "/1.0/instances",
            json={"name": "c", "kind": "container", "image": "tiny", "host_shutdown": "suspend"},
        )
        names = [i["name"] for i in (await api.get("/1.0/instances")).json()]
    assert op["status"] == "success" and op["result"]["changes"] == []
    assert (v["spec"]["autostart"], v["spec"]["start_order"], v["pending"]) == (True, 2, [])
    assert bad.status_code in (400, 422) and "host_shutdown" in bad.text and names == ["v"]


async def test_interrupted_sequence_goes_on_after_a_daemon_restart(tmp_path: Path) -> None:
    """The daemon died during boot-2's sequence (a and b started, nothing else): the next
    daemon start in the same boot starts the rest (c, d) and touches nothing running."""
    await _setup(tmp_path)
    platform, driver = boot_platform(tmp_path, "boot-2", clock=FakeClock())
    assert platform.services.boot is not None
    platform.services.boot.begin = lambda: None  # type: ignore[method-assign]  # "dies" first
    async with running(platform) as p, client(p) as api:
        for name in ("a", "b"):
            await act(api, name, "start")
    platform, driver = boot_platform(tmp_path, "boot-2", driver=driver, clock=FakeClock())
    driver.calls.clear()
    assert platform.services.boot is not None
    async with running(platform):
        report = await platform.services.boot.finished()
    assert [name for call, name in driver.calls if call == "start"] == ["c", "d"]
    assert [e.name for e in report.entries] == ["c", "d"] and report.left_stopped == ["e"]


async def test_group_with_guest_agents_goes_on_when_they_answer(tmp_path: Path) -> None:
    """A group whose members all have a guest agent channel waits only until the agents
    answer (3 s of its 10 s delay here); a group without one waits its whole delay."""
    platform, _ = boot_platform(tmp_path, "boot-1")
    async with running(platform), client(platform) as api:
        r = await api.post("/1.0/images", json={"name": "tiny"})
        await api.get(f"/1.0/operations/{r.json()['id']}/wait", params={"timeout_s": 10})
        await create(api, "g1", autostart=True, start_order=1, start_delay_s=10, guest_agent=True)
        await create(api, "g2", autostart=True, start_order=2, start_delay_s=6)
        await create(api, "g3", autostart=True, start_order=3)
    clock = FakeClock()
    platform, _ = boot_platform(tmp_path, "boot-2", clock=clock)
    asked: list[str] = []

    async def ready(name: str) -> bool:
        asked.append(name)
        return clock.t >= 103.0  # the guest's agent answers 3 s after the sequence began

    assert platform.services.boot is not None
    platform.services.boot.guest_ready = ready
    async with running(platform):
        report = await platform.services.boot.finished()
    assert [(e.name, e.at_s, e.agent_ready_s) for e in report.entries] == [
        ("g1", 0.0, 3.0),
        ("g2", 3.0, None),
        ("g3", 9.0, None),
    ]
    assert clock.slept == [1.0, 1.0, 1.0, 6] and set(asked) == {"g1"}
