"""Two real daemons (``virtfleet serve --store etcd+…``, HTTPS on loopback) on one real
etcd: a tiny VM created through B on host A (``host``) boots on A, and its serial console
opened through B's websocket is A's guest (a command typed through B answers there)."""

from __future__ import annotations

import asyncio
import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from tests.etcdlab import etcd_lab
from virtfleet.state import identity
from virtfleet.util.fingerprint import fingerprint_pem
from virtfleet.util.pinning import pinned_context

from .conftest import Daemon
from .reaping import reap

pytestmark = pytest.mark.integration


def _port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _member(stack: ExitStack, store: str, name: str) -> Daemon:
    data_dir = Path(tempfile.mkdtemp(prefix=f"vf{name}", dir="/tmp"))
    identity.load_or_create(data_dir, name)  # distinct names on one machine
    port = _port()
    d = Daemon(data_dir, ("--listen", f"127.0.0.1:{port}", "--tls", "--store", store))
    d.url = f"https://127.0.0.1:{port}"

    def cleanup() -> None:
        d.stop()
        reap(data_dir)
        shutil.rmtree(data_dir, ignore_errors=True)

    stack.callback(cleanup)
    d.start()
    return d


@pytest.fixture
def members(tiny_cache: Path) -> Iterator[tuple[Daemon, Daemon]]:
    with etcd_lab() as etcd, ExitStack() as stack:
        store = f"etcd+{etcd.url}"
        a, b = _member(stack, store, "fwd-a"), _member(stack, store, "fwd-b")
        op = a.client.build_image("tiny")  # the image file is A's (images are per host)
        assert a.client.wait_operation(op.id, timeout_s=300).status == "success"
        yield a, b


async def _console_answer(b: Daemon, token: str, name: str) -> bytes:
    """Type a command into ``name``'s serial console through B; what comes back."""
    pin = pinned_context(fingerprint_pem((b.data_dir / "tls" / "server.crt").read_text()))
    url = b.url.replace("https", "wss") + f"/1.0/instances/{name}/console"
    headers = {"Authorization": f"Bearer {token}"}
    seen = b""
    async with connect(url, ssl=pin, additional_headers=headers) as ws:
        for _ in range(5):  # a loaded TCG guest can drop typed input before its prompt is up
            await ws.send(b"\recho forwarded-$((6*7))\r")
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 15
            while b"forwarded-42" not in seen and loop.time() < deadline:
                try:
                    seen += await asyncio.wait_for(ws.recv(decode=False), 1)
                except TimeoutError:
                    continue
            if b"forwarded-42" in seen:
                break
    return seen


def test_console_through_b_is_the_guest_on_a(members: tuple[Daemon, Daemon]) -> None:
    a, b = members
    a_id = identity.load(a.data_dir).id
    op = b.client.create_instance({"name": "fw", "image": "tiny", "host": a_id}, start=True)
    assert b.client.wait_operation(op.id, timeout_s=120).status == "success"
    boot = a.wait_marker("fw")  # booted on A, not B
    token = b.client.create_token("operator").token
    seen = asyncio.run(_console_answer(b, token, "fw"))
    assert "VIRTFLEET-READY hostname=fw" in boot
    assert not b.run_dir("fw").exists()
    assert b"forwarded-42" in seen, seen
    assert b"forwarded-42" in a.serial_log("fw").encode()  # the same guest's serial log
