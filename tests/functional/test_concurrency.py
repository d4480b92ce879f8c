"""Many clients at once: no request fails for contention, and per-instance order holds."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from virtfleet.api.auth import local_admin
from virtfleet.app.bootstrap import Platform
from virtfleet.model.instance import PowerState
from virtfleet.state.repos import InstanceRepo

from .helpers import create
from .platform import TestDriver

pytestmark = pytest.mark.usefixtures("image")
CLIENTS = 50


@asynccontextmanager
async def client(platform: Platform) -> AsyncIterator[httpx.AsyncClient]:
    """A client of its own (own connection pool), as a separate program would have."""
    transport = httpx.ASGITransport(app=local_admin(platform.app))
    async with httpx.AsyncClient(transport=transport, base_url="http://virtfleet") as c:
        yield c


async def create_and_start(platform: Platform, name: str) -> tuple[int, dict[str, Any]]:
    async with client(platform) as api:
        r = await api.post("/1.0/instances", json={"name": name, "image": "tiny", "start": True})
        if r.status_code != 202:
            return r.status_code, r.json()
        done = await api.get(f"/1.0/operations/{r.json()['id']}/wait", params={"timeout_s": 60})
        return r.status_code, done.json()


async def test_fifty_concurrent_create_and_start(platform: Platform) -> None:
    """50 clients create+start at once: all 202, every operation succeeds, 50 run."""
    names = [f"vm-{i:02d}" for i in range(CLIENTS)]
    results = await asyncio.gather(*(create_and_start(platform, n) for n in names))
    assert [status for status, _ in results] == [202] * CLIENTS, results
    failed = [op for _, op in results if op.get("status") != "success"]
    assert failed == [], f"{len(failed)} of {CLIENTS} operations failed: {failed[:5]}"
    records = await InstanceRepo(platform.store).list()
    assert sorted(r.name for r in records) == names
    assert {r.status.power for r in records} == {PowerState.RUNNING}


async def test_order_on_one_instance_holds_under_load(
    api: httpx.AsyncClient, platform: Platform, driver: TestDriver
) -> None:
    """While 20 other instances are created and started, one instance's queued changes are
    carried out in the order they were accepted."""
    await create(api)
    others = asyncio.gather(*(create_and_start(platform, f"other-{i}") for i in range(20)))
    actions = ["start", "pause", "resume", "stop", "start", "stop"]
    ops = []
    for action in actions:
        async with client(platform) as own:
            r = await own.put("/1.0/instances/demo/state", json={"action": action})
            assert r.status_code == 202, r.text
            ops.append(r.json()["id"])
    for op_id in ops:
        done = (await api.get(f"/1.0/operations/{op_id}/wait", params={"timeout_s": 30})).json()
        assert done["status"] == "success", done
    assert all(op["status"] == "success" for _, op in await others)
    assert [method for method, name in driver.calls if name == "demo"] == actions
