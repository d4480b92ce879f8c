"""The graphical console through the public API with the fake driver: VNC tickets, the VNC
websocket (uvicorn on the daemon's Unix socket, a small fake RFB server behind it) and
screenshots."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect, unix_connect
from websockets.exceptions import ConnectionClosed

from virtfleet.app.bootstrap import Platform
from virtfleet.client import AsyncClient
from virtfleet.client.paths import api_socket
from virtfleet.model.auth import LOCAL_ROOT, Principal, Role

from . import platform as platform_module
from .accounts import Accounts
from .test_console import prepare

GREETING = b"RFB 003.008\n"
Scenario = Callable[[Path, Platform], Awaitable[None]]
ROOT = Principal(username=LOCAL_ROOT, role=Role.ADMIN, via="local")


def run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scenario: Scenario, local: bool = True
) -> None:
    """Serve the daemon on its Unix socket and run ``scenario(data_dir, platform)``."""
    made: list[Platform] = []
    original = platform_module.make_platform

    def capture(tmp: Path, separate_audit: bool = True) -> tuple[Platform, object]:
        platform, driver = original(tmp, separate_audit)
        made.append(platform)
        return platform, driver

    monkeypatch.setattr(platform_module, "make_platform", capture)
    with platform_module.serve_uds(tmp_path, local) as data_dir:
        asyncio.run(asyncio.wait_for(scenario(data_dir, made[0]), 20))


async def rfb_server(data_dir: Path, platform: Platform) -> asyncio.Server:
    """A stand-in VNC server for ``demo``: greets, then echoes; the fake driver points at it."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(GREETING)
        while data := await reader.read(1024):
            writer.write(data)
        writer.close()

    path = data_dir / "console" / "demo.vnc"
    platform.driver.vnc_socket = lambda name: path if name == "demo" else None  # type: ignore[method-assign]
    return await asyncio.start_unix_server(serve, str(path))


def vnc(data_dir: Path, ticket: str | None, name: str = "demo", **kw: object) -> connect:
    query = f"?ticket={ticket}" if ticket is not None else ""
    uri = f"ws://virtfleet/1.0/instances/{name}/vnc{query}"
    return unix_connect(str(api_socket(data_dir)), uri, **kw)  # type: ignore[arg-type]


async def closed_with(ws: ClientConnection) -> tuple[int, str]:
    with pytest.raises(ConnectionClosed) as info:
        await ws.recv()
    assert info.value.rcvd is not None
    return info.value.rcvd.code, info.value.rcvd.reason


def test_ticket_opens_the_bridge_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A ticket bridges RFB both ways (subprotocol ``binary`` agreed); reusing it is 4403."""

    async def scenario(data_dir: Path, platform: Platform) -> None:
        await prepare(data_dir)
        ticket = platform.services.console_tickets.issue("demo", ROOT).ticket
        async with await rfb_server(data_dir, platform):
            async with vnc(data_dir, ticket, subprotocols=["binary"]) as ws:
                assert ws.subprotocol == "binary"
                assert await ws.recv() == GREETING
                await ws.send(b"RFB 003.008\n")
                assert await ws.recv() == b"RFB 003.008\n"
            async with vnc(data_dir, ticket) as ws:
                code, reason = await closed_with(ws)
        assert code == 4403 and "already used" in reason

    run(tmp_path, monkeypatch, scenario)


def test_expired_ticket_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A ticket older than its 30 s is refused with 4403 saying it expired."""

    async def scenario(data_dir: Path, platform: Platform) -> None:
        await prepare(data_dir)
        tickets = platform.services.console_tickets
        ticket = tickets.issue("demo", ROOT).ticket
        real = tickets.clock
        tickets.clock = lambda: real() + 31
        async with await rfb_server(data_dir, platform), vnc(data_dir, ticket) as ws:
            code, reason = await closed_with(ws)
        assert code == 4403 and "expired" in reason

    run(tmp_path, monkeypatch, scenario)


def test_ticket_for_another_instance_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ticket issued for ``other`` does not open ``demo``'s screen: 4403."""

    async def scenario(data_dir: Path, platform: Platform) -> None:
        await prepare(data_dir)
        ticket = platform.services.console_tickets.issue("other", ROOT).ticket
        async with await rfb_server(data_dir, platform), vnc(data_dir, ticket) as ws:
            code, reason = await closed_with(ws)
        assert code == 4403 and "not for instance 'demo'" in reason

    run(tmp_path, monkeypatch, scenario)


def test_unauthenticated_websocket_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Off the local socket, no credentials and no ticket is 4401; a made-up ticket is 4403."""

    async def scenario(data_dir: Path, platform: Platform) -> None:
        async with vnc(data_dir, None) as ws:
            assert (await closed_with(ws))[0] == 4401
        async with vnc(data_dir, "forged") as ws:
            assert (await closed_with(ws))[0] == 4403

    run(tmp_path, monkeypatch, scenario, local=False)


def test_stopped_instance_has_no_vnc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A valid ticket for a stopped instance closes with 4409: there is no VNC server."""

    async def scenario(data_dir: Path, platform: Platform) -> None:
        await prepare(data_dir, start=False)
        ticket = platform.services.console_tickets.issue("demo", ROOT).ticket
        async with vnc(data_dir, ticket) as ws:
            code, reason = await closed_with(ws)
        assert code == 4409 and "no VNC server" in reason

    run(tmp_path, monkeypatch, scenario)


async def test_viewer_cannot_get_a_ticket(accounts: Accounts, api: httpx.AsyncClient) -> None:
    """Tickets open a console, a change: a viewer gets 403, an operator a 30 s ticket."""
    await api.post("/1.0/instances", json={"name": "demo", "boot": {"kernel": "/k"}})
    viewer = await accounts.token(Role.VIEWER)
    r = await viewer.post("/1.0/instances/demo/console/vnc-ticket")
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    operator = AsyncClient(http=await accounts.token(Role.OPERATOR))
    ticket = await operator.vnc_ticket("demo")
    assert ticket.expires_in_s == 30 and len(ticket.ticket) >= 32


async def test_screenshot_is_png_and_needs_a_running_instance(
    accounts: Accounts, api: httpx.AsyncClient, image: str
) -> None:
    """A viewer gets the screen as PNG; a stopped instance answers 409 invalid_state."""
    client = AsyncClient(http=api)
    op = await client.create_instance({"name": "demo", "image": image}, start=False)
    assert (await client.wait_operation(op.id, timeout_s=10)).status == "success"
    viewer = await accounts.token(Role.VIEWER)
    r = await viewer.get("/1.0/instances/demo/screenshot")
    assert r.status_code == 409 and r.json()["error"]["code"] == "invalid_state"
    op = await client.change_state("demo", "start")
    assert (await client.wait_operation(op.id, timeout_s=10)).status == "success"
    r = await viewer.get("/1.0/instances/demo/screenshot")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert (await client.screenshot("demo")).startswith(b"\x89PNG\r\n\x1a\n")
