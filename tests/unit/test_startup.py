"""``app.startup``: the daemon starts inline when its store answers, else keeps trying in
the background while ``StoreGate`` answers API requests 503 ``store_unavailable`` with the
reason (websockets are closed with 1013, try again later); other paths are served."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from virtfleet.app import startup as startup_module
from virtfleet.app.startup import Startup, StoreGate
from virtfleet.errors import StoreUnavailableError


class Flaky:
    """A probe that fails ``failures`` times, then answers."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    async def __call__(self) -> int:
        self.calls += 1
        if self.calls <= self.failures:
            raise StoreUnavailableError("etcd is unavailable: connection refused")
        return 1


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(startup_module, "RETRY_S", (0.0,))


async def test_a_store_that_answers_starts_inline() -> None:
    started: list[str] = []

    async def start() -> None:
        started.append("platform")

    startup = Startup(Flaky(0), start, "sqlite")
    await startup.begin()
    assert started == ["platform"] and startup.reason is None and startup.started.is_set()
    assert await startup.close()


async def test_an_unreachable_store_is_retried_with_the_reason_shown() -> None:
    reasons: list[str | None] = []
    probe = Flaky(3)

    async def start() -> None:
        reasons.append(startup.reason)  # still refusing while the platform starts

    startup = Startup(probe, start, "etcd at http://e:2379")
    await startup.begin()
    first = startup.reason
    async with asyncio.timeout(5):
        await startup.started.wait()
    assert first == (
        "waiting for the state store (etcd at http://e:2379): "
        "etcd is unavailable: connection refused"
    )
    assert probe.calls == 4 and reasons == [first] and startup.reason is None
    assert await startup.close()


async def test_closing_while_waiting_stops_the_retries() -> None:
    startup = Startup(Flaky(10**9), lambda: asyncio.sleep(0), "etcd")
    await startup.begin()
    assert not await startup.close()  # never started: nothing to stop


def _app(startup: Startup) -> StoreGate:
    async def hello(_: object) -> PlainTextResponse:
        return PlainTextResponse("hello")

    async def ws(socket: WebSocket) -> None:
        await socket.accept()
        await socket.send_text("hello")
        await socket.close()

    routes = [Route("/1.0/x", hello), Route("/ui", hello), WebSocketRoute("/1.0/ws", ws)]
    return StoreGate(Starlette(routes=routes), startup)


async def test_the_gate_refuses_api_requests_until_started() -> None:
    startup = Startup(Flaky(0), lambda: asyncio.sleep(0), "etcd")
    startup.reason = "waiting for the state store (etcd): down"
    transport = httpx.ASGITransport(app=_app(startup))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        refused = await client.get("/1.0/x")
        page = await client.get("/ui")
        startup.reason = None
        served = await client.get("/1.0/x")
    assert refused.status_code == 503
    assert refused.json() == {
        "error": {
            "code": "store_unavailable",
            "message": "waiting for the state store (etcd): down",
            "status": 503,
        }
    }
    assert (page.text, served.text) == ("hello", "hello")


async def test_the_gate_closes_websockets_until_started() -> None:
    """Refused at the handshake with 1013 (try again later); served once started."""
    startup = Startup(Flaky(0), lambda: asyncio.sleep(0), "etcd")
    startup.reason = "waiting for the state store (etcd): down"
    gate = _app(startup)
    refused = await _handshake(gate)
    startup.reason = None
    served = await _handshake(gate)
    assert refused == [
        {
            "type": "websocket.close",
            "code": 1013,
            "reason": "waiting for the state store (etcd): down",
        }
    ]
    assert [m["type"] for m in served][:2] == ["websocket.accept", "websocket.send"]


async def _handshake(app: StoreGate) -> list[dict[str, object]]:
    """What ``app`` sends to a websocket client that connects to /1.0/ws."""
    incoming = [{"type": "websocket.connect"}, {"type": "websocket.disconnect", "code": 1000}]
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return incoming.pop(0) if incoming else {"type": "websocket.disconnect", "code": 1000}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    scope = {"type": "websocket", "path": "/1.0/ws", "headers": [], "query_string": b""}
    await app(scope, receive, send)  # type: ignore[arg-type]
    return sent
