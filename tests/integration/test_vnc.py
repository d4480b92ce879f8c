"""The graphical console of a real tiny guest: VNC through the websocket bridge, screenshots."""

from __future__ import annotations

import asyncio
import json
import struct
import subprocess
import zlib

import pytest
from websockets.asyncio.client import unix_connect
from websockets.exceptions import ConnectionClosed

from .conftest import VIRTFLEET, Daemon

pytestmark = pytest.mark.integration


async def _greeting(daemon: Daemon, name: str, ticket: str) -> bytes:
    """The first frame of the VNC websocket opened with ``ticket`` on the daemon's socket."""
    uri = f"ws://virtfleet/1.0/instances/{name}/vnc?ticket={ticket}"
    sock = str(daemon.data_dir / "api.sock")
    async with unix_connect(sock, uri, subprotocols=["binary"]) as ws:  # type: ignore[list-item]
        data = await asyncio.wait_for(ws.recv(), 10)
        assert isinstance(data, bytes)
        return data


def _pixels(png: bytes) -> tuple[int, int, bytes]:
    """Width, height and the decompressed scanlines (filter bytes included) of a PNG."""
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    pos, idat, width, height = 8, b"", 0, 0
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        kind, data = png[pos + 4 : pos + 8], png[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height = struct.unpack(">II", data[:8])
        elif kind == b"IDAT":
            idat += data
        pos += 12 + length
    return width, height, zlib.decompress(idat)


def test_vnc_bridge_reaches_the_guest_vnc_server(daemon: Daemon) -> None:
    """A ticket opens the websocket and QEMU's VNC server greets with RFB 3.8 through it."""
    daemon.create("vnc")
    ticket = daemon.client.vnc_ticket("vnc").ticket
    assert asyncio.run(_greeting(daemon, "vnc", ticket)) == b"RFB 003.008\n"


def test_reused_ticket_is_refused(daemon: Daemon) -> None:
    """A ticket is single use: the second websocket opened with it closes with 4403."""
    daemon.create("once")
    ticket = daemon.client.vnc_ticket("once").ticket
    assert asyncio.run(_greeting(daemon, "once", ticket)) == b"RFB 003.008\n"
    with pytest.raises(ConnectionClosed) as info:
        asyncio.run(_greeting(daemon, "once", ticket))
    assert info.value.rcvd is not None and info.value.rcvd.code == 4403


def test_screenshot_is_a_png_that_is_not_blank(daemon: Daemon) -> None:
    """The booted guest's screen (SeaBIOS/syslinux text) comes back as a PNG of varied pixels."""
    daemon.create("shot")
    daemon.wait_marker("shot")
    width, height, raw = _pixels(daemon.client.screenshot("shot"))
    assert width >= 320 and height >= 200
    stride = 1 + 3 * width  # 8-bit RGB, one filter byte per row
    rows = [raw[y * stride + 1 : (y + 1) * stride] for y in range(height)]
    assert len({row for row in rows}) > 1, "every row is identical: the screen is blank"


def test_cli_screenshot_writes_the_file(daemon: Daemon) -> None:
    """`vm screenshot NAME -o FILE --json` writes the PNG and prints its path and size."""
    daemon.create("cli")
    out = daemon.data_dir / "cli.png"
    argv = [VIRTFLEET, "--data-dir", str(daemon.data_dir), "vm", "screenshot", "cli"]
    done = subprocess.run([*argv, "-o", str(out), "--json"], capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["path"] == str(out) and report["size_bytes"] == out.stat().st_size > 0
