"""Admission is a reservation (fake driver, the whole daemon in-process): capacity is
checked and reserved when a start, create or resize runs, not only when it is asked
for; a failed start gives its room back. Also the orderings that keep one request
from pulling files from under another: a restore over a VM and a start, an image
rebuild and its users, two creates of one name."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import httpx
import pytest

from virtfleet.app.bootstrap import Platform
from virtfleet.service.capacity import CapacityService
from virtfleet.state.keys import INSTANCES

from .helpers import act, assert_error, create, wait_op
from .platform import FACTS, TestDriver

pytestmark = pytest.mark.usefixtures("image", "yielding_store")
GIB4 = 4096  # the fake host's whole memory (tests/functional/platform.py FACTS)


@pytest.fixture
def yielding_store(platform: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every store read and write yields to the event loop first, as a store doing real
    I/O does (etcd, a SQLite in a thread): the in-memory store never does, which would
    make a check and a later write look atomic when nothing makes them so."""
    store = platform.store
    for method in ("get", "list", "put", "txn", "delete"):
        monkeypatch.setattr(store, method, _yielding(getattr(store, method)))


def _yielding(call: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    async def yielded(*args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(0)
        return await call(*args, **kwargs)

    return yielded


def capacity(platform: Platform) -> CapacityService:
    assert platform.services.capacity is not None
    return platform.services.capacity


async def first_done(tasks: Iterable[asyncio.Task[Any]], n: int) -> None:
    """Wait until ``n`` of ``tasks`` are done (each waits at most 10 s for its operation)."""
    pending = set(tasks)
    total = len(pending)
    while len(pending) > total - n:
        _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)


def refusal(r: httpx.Response, op: dict[str, Any] | None) -> str | None:
    """The capacity error of a start refused when asked (409) or when it ran; else None."""
    if r.status_code == 409:
        return assert_error(r, 409, "insufficient_capacity")
    assert op is not None
    if op["status"] == "success":
        return None
    assert op["error_code"] == "insufficient_capacity", op
    return str(op["error_message"])


async def test_parallel_starts_at_the_capacity_edge(
    api: httpx.AsyncClient, platform: Platform, driver: TestDriver
) -> None:
    """Five 4 GiB VMs started at once with room for two (4 GiB x ratio 2): two run, three
    are refused naming the shortfall, also while the two starts are still in flight."""
    capacity(platform).ratios.memory = 2.0
    names = [f"vm{i}" for i in range(5)]
    for name in names:
        await create(api, name, memory_mib=GIB4)
        driver.gates[name] = asyncio.Event()  # admitted starts stay in flight until set
    puts = [api.put(f"/1.0/instances/{n}/state", json={"action": "start"}) for n in names]
    responses = await asyncio.gather(*puts)
    waits = {
        n: asyncio.create_task(wait_op(api, r.json()))
        for n, r in zip(names, responses, strict=True)
        if r.status_code == 202
    }
    # The refused ones end while the admitted starts are still held in flight.
    await first_done(waits.values(), len(waits) - 2)
    for gate in driver.gates.values():
        gate.set()
    ops = {n: await t for n, t in waits.items()}
    started = [name for kind, name in driver.calls if kind == "start"]
    errors = [refusal(r, ops.get(n)) for n, r in zip(names, responses, strict=True)]
    refused = [e for e in errors if e is not None]
    assert len(started) == 2 and len(refused) == 3, (started, errors)
    for message in refused:
        assert f"needs {GIB4} MiB, 0 MiB available at ratio 2" in message, message
    powers = [i["status"]["power"] for i in (await api.get("/1.0/instances")).json()]
    assert sorted(powers) == ["running"] * 2 + ["stopped"] * 3
    cap = (await api.get("/1.0/host/capacity")).json()
    assert (cap["allocated_memory_mib"], cap["instances"]) == (2 * GIB4, 2)


async def test_parallel_creates_with_start_at_the_capacity_edge(
    api: httpx.AsyncClient, platform: Platform, driver: TestDriver
) -> None:
    """Three create+start requests of 4 GiB VMs at once with room for one: one is made."""
    names = ["a", "b", "c"]
    for name in names:
        driver.gates[name] = asyncio.Event()
    bodies = [{"name": n, "image": "tiny", "memory_mib": GIB4, "start": True} for n in names]
    capacity(platform).ratios.memory = 1.0
    responses = await asyncio.gather(*(api.post("/1.0/instances", json=b) for b in bodies))
    codes = sorted(r.status_code for r in responses)
    assert codes == [202, 409, 409], [r.text for r in responses]
    refused = [
        assert_error(r, 409, "insufficient_capacity") for r in responses if r.status_code == 409
    ]
    assert all("needs 4096 MiB, 0 MiB available" in m for m in refused), refused
    for gate in driver.gates.values():
        gate.set()
    made = next(r for r in responses if r.status_code == 202)
    assert (await wait_op(api, made))["status"] == "success"
    assert len((await api.get("/1.0/instances")).json()) == 1


async def test_a_failed_start_gives_its_room_back(
    api: httpx.AsyncClient, platform: Platform, driver: TestDriver
) -> None:
    """A start the driver fails holds no capacity: another VM of that size starts next."""
    capacity(platform).ratios.memory = 1.0
    await create(api, "first", memory_mib=GIB4)
    await create(api, "second", memory_mib=GIB4)
    driver.fail_next_start = "injected start failure"
    assert (await act(api, "first", "start"))["status"] == "failure"
    cap = (await api.get("/1.0/host/capacity")).json()
    assert (cap["allocated_memory_mib"], cap["instances"]) == (0, 0)
    assert (await act(api, "second", "start"))["status"] == "success"
    r = await api.put("/1.0/instances/first/state", json={"action": "start"})
    assert "needs 4096 MiB, 0 MiB available" in assert_error(r, 409, "insufficient_capacity")


async def test_parallel_resizes_at_the_capacity_edge(
    api: httpx.AsyncClient, platform: Platform
) -> None:
    """Two running VMs grown at once where only one growth fits: one grows, one is refused."""
    capacity(platform).ratios.memory = 1.0  # 4096 MiB: 1024 + 1024 now, 3072 + 1024 fits
    for name in ("left", "right"):
        await create(api, name, start=True, memory_mib=1024, max_memory_mib=3072)
    grow = {"memory_mib": 3072}
    responses = await asyncio.gather(
        *(api.patch(f"/1.0/instances/{n}", json=grow) for n in ("left", "right"))
    )
    ops = [await wait_op(api, r) if r.status_code == 202 else None for r in responses]
    errors = [refusal(r, op) for r, op in zip(responses, ops, strict=True)]
    refused = [e for e in errors if e is not None]
    assert len(refused) == 1, errors
    assert "needs 3072 MiB, 1024 MiB available at ratio 1" in refused[0]
    specs = [i["spec"]["memory_mib"] for i in (await api.get("/1.0/instances")).json()]
    assert sorted(specs) == [1024, 3072]
    cap = (await api.get("/1.0/host/capacity")).json()
    assert cap["allocated_memory_mib"] == 4096


async def test_the_tally_agrees_with_a_listing(
    api: httpx.AsyncClient, platform: Platform, driver: TestDriver
) -> None:
    """Through creates, starts, a failed start, a resize, stops and deletes, the totals the
    watch keeps equal those of a listing of every instance."""
    kept = capacity(platform)
    listing = CapacityService(platform.store, FACTS, kept.ratios)  # never started

    async def agree() -> None:
        assert kept.tally.following
        assert await kept.report(sample=False) == await listing.report(sample=False)

    await create(api, "a", start=True, memory_mib=512, max_memory_mib=1024)
    await create(api, "b", start=True, vcpus=2)
    await create(api, "c")
    await agree()
    driver.fail_next_start = "injected start failure"
    assert (await act(api, "c", "start"))["status"] == "failure"
    await agree()
    op = await wait_op(api, await api.patch("/1.0/instances/a", json={"memory_mib": 1024}))
    assert op["status"] == "success", op
    await agree()
    assert (await act(api, "b", "stop"))["status"] == "success"
    await agree()
    assert (await wait_op(api, await api.delete("/1.0/instances/a?force=true")))["status"] == (
        "success"
    )
    await agree()
    cap = await kept.report(sample=False)
    assert (cap.allocated_memory_mib, cap.instances) == (0, 0)


async def test_admission_lists_no_instances(
    api: httpx.AsyncClient, platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A start is admitted from the tally: nothing lists /instances/ (O(1) per start)."""
    await create(api, "demo")
    listed: list[str] = []
    original = platform.store.list

    async def list_(prefix: str) -> Any:
        listed.append(prefix)
        return await original(prefix)

    monkeypatch.setattr(platform.store, "list", list_)
    assert (await act(api, "demo", "start"))["status"] == "success"
    assert INSTANCES not in listed, listed  # one instance's own keys are read, no more
