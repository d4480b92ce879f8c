"""The daemon on an external etcd (a real member the test starts, stops and starts again):
it waits for etcd instead of dying, answering 503 ``store_unavailable`` with the reason;
an outage leaves the guests alone; afterwards the agent and the event stream follow the
store again (their watches resync) without a restart."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx

from tests.etcdlab import etcd_lab
from tests.functional.helpers import assert_error, create, wait_op
from tests.functional.platform import make_platform
from virtfleet.api.auth import local_admin
from virtfleet.app.bootstrap import Platform
from virtfleet.model.event import Event
from virtfleet.service.waiting import wait_until


@contextlib.asynccontextmanager
async def daemon(platform: Platform) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan (as uvicorn runs it) and a local-root client."""
    transport = httpx.ASGITransport(app=local_admin(platform.app))
    async with (
        platform.app.router.lifespan_context(platform.app),
        httpx.AsyncClient(transport=transport, base_url="http://virtfleet") as api,
    ):
        yield api


async def _collect(stream: AsyncIterator[Event], into: list[Event], kind: str) -> None:
    async for event in stream:
        into.append(event)
        if event.kind == kind:
            return


async def test_the_daemon_waits_for_etcd_and_rides_out_an_outage(tmp_path: Path) -> None:
    with etcd_lab(start=False) as etcd:
        platform, driver = make_platform(tmp_path, store=f"etcd+{etcd.url}")
        assert platform.startup is not None
        async with daemon(platform) as api:
            waiting = await api.get("/1.0/instances")
            message = assert_error(waiting, 503, "store_unavailable")
            assert message.startswith(f"waiting for the state store (etcd at {etcd.url})")
            assert not platform.startup.started.is_set()
            await asyncio.to_thread(etcd.start)
            await asyncio.wait_for(platform.startup.started.wait(), 30)
            image = await wait_op(api, await api.post("/1.0/images", json={"name": "tiny"}))
            assert image["status"] == "success", image
            await create(api, "web", start=True)
            await _operations_saved(platform)
            events: list[Event] = []
            stream = platform.services.events.stream(await platform.store.revision())
            reader = asyncio.create_task(_collect(stream, events, "instance.created"))

            await asyncio.to_thread(etcd.stop)
            assert_error(await api.get("/1.0/instances"), 503, "store_unavailable")
            assert (await driver.status("web")).power.value == "running"  # guest untouched

            await asyncio.to_thread(etcd.start)
            stopped = await _until_done(api, "web", "stop")
            await create(api, "db")
            await asyncio.wait_for(reader, 30)  # the stream followed across the outage
        assert stopped["status"] == "success", stopped
        assert (await driver.status("web")).power.value == "stopped"
        assert [c for c in driver.calls if c == ("stop", "web")] == [("stop", "web")]
        assert [e.target for e in events if e.kind == "instance.created"] == ["instance/db"]


async def _until_done(api: httpx.AsyncClient, name: str, action: str) -> dict[str, object]:
    """``action`` once the API answers again (etcd just came back; the first requests may
    still be refused while the client reconnects)."""
    async with asyncio.timeout(30):
        while True:
            r = await api.put(f"/1.0/instances/{name}/state", json={"action": action})
            if r.status_code != 503:
                return await wait_op(api, r)
            await asyncio.sleep(0.2)  # etcd is starting: a retry timer, as a client would


async def _operations_saved(platform: Platform) -> None:
    """Every operation's final record is in etcd (it is saved just after waiters answer)."""

    async def saved() -> bool | None:
        ops = [json.loads(kv.value) for kv in await platform.store.list("/operations/")]
        return all(op["status"] == "success" for op in ops) or None

    assert await wait_until(platform.store, "/operations/", saved, 10)
