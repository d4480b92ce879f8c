"""Host facts and checks, and the event log (history and live websocket stream)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
from websockets.asyncio.client import unix_connect

from virtfleet.client.paths import api_socket

from .platform import serve_uds


async def test_host_facts_and_checks(api: httpx.AsyncClient) -> None:
    """GET /1.0/host returns the probed facts; /1.0/host/check the checks."""
    facts = (await api.get("/1.0/host")).json()
    assert (facts["hostname"], facts["cpus"]) == ("testhost", 4)
    checks = (await api.get("/1.0/host/check")).json()
    assert checks and all({"name", "ok", "level", "detail"} <= set(c) for c in checks)


async def test_events_after_a_revision(api: httpx.AsyncClient, image: str) -> None:
    """``after`` returns only newer events, oldest first, at most ``limit``."""
    everything = (await api.get("/1.0/events")).json()
    first = everything[0]["revision"]
    later = (await api.get("/1.0/events", params={"after": first, "limit": 1})).json()
    assert len(later) == 1 and later[0]["revision"] > first
    assert later[0] == everything[1]


def test_events_websocket_streams_new_events(tmp_path: Path) -> None:
    """The events websocket pushes each new event as a JSON text frame."""
    import asyncio

    async def scenario(data_dir: Path) -> dict[str, object]:
        sock = str(api_socket(data_dir))
        async with unix_connect(sock, "ws://virtfleet/1.0/events") as ws:
            transport = httpx.AsyncHTTPTransport(uds=sock)
            async with httpx.AsyncClient(transport=transport, base_url="http://virtfleet") as api:
                r = await api.post("/1.0/images", json={"name": "tiny"})
                assert r.status_code == 202
            while True:
                event = json.loads(await asyncio.wait_for(ws.recv(), 10))
                if event["kind"] == "image.built":
                    return dict(event)

    with serve_uds(tmp_path) as data_dir:
        event = asyncio.run(scenario(data_dir))
    assert event["target"] == "image/tiny" and isinstance(event["revision"], int)
