"""The serial console websocket, through uvicorn on the daemon's Unix socket.

A small Unix socket echo server stands in for QEMU's socket chardev.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect, unix_connect
from websockets.exceptions import ConnectionClosed

from virtfleet.client.paths import api_socket

from .platform import serve_uds

Scenario = Callable[[Path], Awaitable[None]]


def run(tmp_path: Path, scenario: Scenario) -> None:
    with serve_uds(tmp_path) as data_dir:
        asyncio.run(asyncio.wait_for(scenario(data_dir), 20))


async def prepare(data_dir: Path, start: bool = True) -> None:
    """Build the image and create ``demo`` (running unless ``start`` is False)."""
    transport = httpx.AsyncHTTPTransport(uds=str(api_socket(data_dir)))
    async with httpx.AsyncClient(transport=transport, base_url="http://virtfleet") as api:
        for path, body in [
            ("/1.0/images", {"name": "tiny"}),
            ("/1.0/instances", {"name": "demo", "image": "tiny", "start": start}),
        ]:
            op = (await api.post(path, json=body)).json()
            done = await api.get(f"/1.0/operations/{op['id']}/wait", params={"timeout_s": 10})
            assert done.json()["status"] == "success", done.text


async def echo_server(data_dir: Path) -> asyncio.Server:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(1024):
            writer.write(data)
            await writer.drain()
        writer.close()

    return await asyncio.start_unix_server(echo, str(data_dir / "console" / "demo.sock"))


def console(data_dir: Path, name: str = "demo") -> connect:
    return unix_connect(str(api_socket(data_dir)), f"ws://virtfleet/1.0/instances/{name}/console")


async def closed_with(ws: ClientConnection) -> tuple[int, str]:
    with pytest.raises(ConnectionClosed) as info:
        await ws.recv()
    assert info.value.rcvd is not None
    return info.value.rcvd.code, info.value.rcvd.reason


def test_console_bridges_bytes_both_ways(tmp_path: Path) -> None:
    """Bytes sent on the websocket reach the serial socket and its answers come back."""

    async def scenario(data_dir: Path) -> None:
        await prepare(data_dir)
        async with await echo_server(data_dir), console(data_dir) as ws:
            await ws.send(b"root\r\n")
            assert await ws.recv() == b"root\r\n"

    run(tmp_path, scenario)


def test_second_console_client_is_refused_as_busy(tmp_path: Path) -> None:
    """QEMU serves one console client: a second one is closed with 4409 and a clear reason."""

    async def scenario(data_dir: Path) -> None:
        await prepare(data_dir)
        async with await echo_server(data_dir), console(data_dir) as first:
            await first.send(b"x")
            assert await first.recv() == b"x"
            async with console(data_dir) as second:
                code, reason = await closed_with(second)
            assert code == 4409 and "busy" in reason

    run(tmp_path, scenario)


def test_console_of_a_stopped_instance_is_refused(tmp_path: Path) -> None:
    """Without a console socket (not running) the websocket closes with 4409 saying so."""

    async def scenario(data_dir: Path) -> None:
        await prepare(data_dir, start=False)
        async with console(data_dir) as ws:
            code, reason = await closed_with(ws)
        assert code == 4409 and "no serial console" in reason

    run(tmp_path, scenario)


def test_console_of_an_unknown_instance_is_404(tmp_path: Path) -> None:
    """An unknown instance closes the websocket with 4404; a bad name with 4400."""

    async def scenario(data_dir: Path) -> None:
        async with console(data_dir, "ghost") as ws:
            assert (await closed_with(ws))[0] == 4404
        async with console(data_dir, "Ghost") as ws:
            assert (await closed_with(ws))[0] == 4400

    run(tmp_path, scenario)
