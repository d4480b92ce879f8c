"""Cluster members for functional tests: daemons on one real etcd, each serving its API on a
real loopback HTTPS listener (its own self-signed certificate, the fingerprint in its host
record) with the fake driver, plus a local-root in-process client."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import uvicorn

from tests.etcdlab import etcd_lab
from tests.functional.helpers import create, wait_op
from tests.functional.platform import TestDriver, make_platform, running
from virtfleet.api.auth import local_admin
from virtfleet.app.bootstrap import Platform
from virtfleet.app.serving import Endpoint, bind_tcp
from virtfleet.app.tls import server_certificate
from virtfleet.state import identity


class QuietServer(uvicorn.Server):
    """A uvicorn server that leaves the test process's signal handlers alone."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass
class Member:
    name: str
    platform: Platform
    driver: TestDriver
    api: httpx.AsyncClient  # in-process, local root
    url: str  # the real HTTPS listener
    fingerprint: str
    server: QuietServer
    task: asyncio.Task[None]
    host_id: str

    async def stop_listener(self) -> None:
        """Stop answering on the network (the daemon and its host record stay)."""
        self.server.should_exit = True
        await self.task


@contextlib.asynccontextmanager
async def member(tmp: Path, name: str, store: str) -> AsyncIterator[Member]:
    """Daemon ``name`` on ``store``, started and listening on 127.0.0.1 over HTTPS."""
    me = identity.load_or_create(tmp / name, name)
    platform, driver = make_platform(tmp / name, store=store)
    cert = server_certificate(tmp / name / "tls", None, None, ["127.0.0.1"])
    sock = bind_tcp(Endpoint("127.0.0.1", 0, True))
    url = f"https://127.0.0.1:{sock.getsockname()[1]}"
    assert platform.presence is not None
    platform.presence.api_url, platform.presence.fingerprint = url, cert.fingerprint
    config = uvicorn.Config(
        platform.app, lifespan="off", log_level="warning", ws="websockets-sansio",
        ssl_certfile=str(cert.cert), ssl_keyfile=str(cert.key),
    )  # fmt: skip
    server = QuietServer(config)
    transport = httpx.ASGITransport(app=local_admin(platform.app))
    async with (
        running(platform),
        httpx.AsyncClient(transport=transport, base_url="http://virtfleet") as api,
    ):
        task = asyncio.create_task(server.serve(sockets=[sock]))
        try:
            while not server.started and not task.done():
                await asyncio.sleep(0.01)  # uvicorn sets ``started`` once it accepts
            yield Member(name, platform, driver, api, url, cert.fingerprint, server, task, me.id)
        finally:
            # The daemon's lifespan does this; here it is not run. An idle TLS connection to
            # another member would hold that member's shutdown (asyncio's SSL close wait).
            await platform.app.state.forwarder.aclose()
            server.should_exit = True
            await task
            sock.close()


@contextlib.asynccontextmanager
async def pair(tmp: Path) -> AsyncIterator[tuple[Member, Member]]:
    """Members A and B on one etcd; A owns the running instance ``web``."""
    with etcd_lab() as etcd:
        store = f"etcd+{etcd.url}"
        async with member(tmp, "host-a", store) as a, member(tmp, "host-b", store) as b:
            image = await wait_op(a.api, await a.api.post("/1.0/images", json={"name": "tiny"}))
            assert image["status"] == "success", image
            await create(a.api, "web", start=True)
            yield a, b
