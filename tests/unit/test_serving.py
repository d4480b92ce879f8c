"""``virtfleet serve``'s listeners: --listen parsing, the TLS rule, the certificate, and one
platform lifespan shared by the Unix socket and TCP servers."""

from __future__ import annotations

import asyncio
import contextlib
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from virtfleet.app.serving import (
    Endpoint,
    Listener,
    bind_tcp,
    bind_unix,
    parse_listen,
    prepare,
    run_listeners,
)
from virtfleet.app.tls import server_certificate
from virtfleet.client.tls import pinned_context
from virtfleet.errors import ConflictError, InvalidInputError
from virtfleet.util.fingerprint import fingerprint_pem


def test_listen_default_and_lists() -> None:
    """Default 127.0.0.1:8006 over http; values repeat or are comma-separated."""
    assert parse_listen([]) == [Endpoint("127.0.0.1", 8006, tls=False)]
    assert parse_listen(["127.0.0.1:9000,[::1]:9001", "localhost"]) == [
        Endpoint("127.0.0.1", 9000, False),
        Endpoint("::1", 9001, False),
        Endpoint("localhost", 8006, False),
    ]
    assert parse_listen(["none"]) == []


def test_beyond_loopback_is_always_tls() -> None:
    """Any non-loopback address (wildcards, names) is served over TLS; --tls adds loopback."""
    eps = parse_listen(["0.0.0.0:8006", "[::]:8006", "myhost:1", "127.0.0.1:2"])
    assert [ep.tls for ep in eps] == [True, True, True, False]
    assert parse_listen(["127.0.0.1:2"], tls=True)[0].url == "https://127.0.0.1:2"
    assert Endpoint("::1", 5, True).url == "https://[::1]:5"


@pytest.mark.parametrize("spec", ["none,127.0.0.1:1", "::1:8006", "h:x", "h:70000", "8006", ":1"])
def test_bad_listen_values(spec: str) -> None:
    with pytest.raises(InvalidInputError):
        parse_listen([spec])


def test_self_signed_certificate_is_made_once(tmp_path: Path) -> None:
    """First start writes a 0600 key and a certificate; the next start reuses them."""
    first = server_certificate(tmp_path / "tls", None, None, ["127.0.0.1"])
    assert first.generated and stat.S_IMODE(first.key.stat().st_mode) == 0o600
    assert stat.S_IMODE(first.cert.parent.stat().st_mode) == 0o700
    assert first.fingerprint == fingerprint_pem(first.cert.read_text())
    again = server_certificate(tmp_path / "tls", None, None)
    assert not again.generated and again.fingerprint == first.fingerprint


def test_operator_certificate_needs_both_files(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="give both"):
        server_certificate(tmp_path, tmp_path / "c.pem", None)
    with pytest.raises(InvalidInputError, match="cannot read"):
        server_certificate(tmp_path, tmp_path / "c.pem", tmp_path / "k.pem")


def test_busy_port_is_a_clean_error() -> None:
    first = bind_tcp(Endpoint("127.0.0.1", 0, False))
    first.listen()
    port = first.getsockname()[1]
    with first, pytest.raises(ConflictError, match=f"127.0.0.1:{port}"):
        bind_tcp(Endpoint("127.0.0.1", port, False))


def counting_app(counts: dict[str, int]) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        counts["start"] += 1
        yield
        counts["stop"] += 1

    app = FastAPI(lifespan=lifespan)
    app.add_api_route("/ping", lambda: {"starts": counts["start"]}, methods=["GET"])
    return app


async def test_unix_and_tls_servers_share_one_lifespan(tmp_path: Path) -> None:
    """Both listeners answer while the app's lifespan (the platform's start/stop) runs once;
    the Unix socket is 0600 and removed at the end."""
    counts = {"start": 0, "stop": 0}
    app = counting_app(counts)
    cert = server_certificate(tmp_path / "tls", None, None)
    sock_path = tmp_path / "api.sock"
    tcp = bind_tcp(Endpoint("127.0.0.1", 0, True))
    listeners = [
        Listener("unix", bind_unix(sock_path), app, unix_path=sock_path),
        Listener("tcp", tcp, app, (cert.cert, cert.key)),
    ]
    servers = prepare(listeners)
    task = asyncio.create_task(run_listeners(app, listeners, servers))
    for _ in range(1000):  # uvicorn has no started event: poll its flag
        if all(s.started for s in servers):
            break
        await asyncio.sleep(0.01)
    assert stat.S_IMODE(sock_path.stat().st_mode) == 0o600
    unix = httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(uds=str(sock_path)))
    tls = httpx.AsyncClient(verify=pinned_context(cert.fingerprint))
    async with unix, tls:
        assert (await unix.get("http://virtfleet/ping")).json() == {"starts": 1}
        port = tcp.getsockname()[1]
        assert (await tls.get(f"https://127.0.0.1:{port}/ping")).json() == {"starts": 1}
    for server in servers:
        server.should_exit = True
    await asyncio.wait_for(task, 10)
    assert counts == {"start": 1, "stop": 1}
    assert not sock_path.exists()
