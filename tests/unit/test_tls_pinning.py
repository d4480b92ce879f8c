"""Certificate pinning: the client trusts exactly the pinned certificate, over every path.

A changed certificate is ``certificate_mismatch`` for the sync client, the
async client and the websocket, and no request (no token) reaches the server.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.unit.tls_server import TlsServer, new_certificate, serve_tls
from virtfleet.client import ApiError, AsyncClient, Client
from virtfleet.client.tls import fetch_fingerprint
from virtfleet.util.fingerprint import normalize_fingerprint


@pytest.fixture
def server(tmp_path: Path) -> Iterator[TlsServer]:
    with serve_tls(tmp_path) as s:
        yield s


@pytest.fixture
def other_pin(tmp_path: Path) -> str:
    """The fingerprint of another certificate: what a client pinned before it changed."""
    return new_certificate(tmp_path / "old-tls")[2]


def test_pinned_certificate_is_trusted_and_token_sent(server: TlsServer) -> None:
    """With the right pin (a self-signed cert, host name unchecked) requests go through
    and carry ``Authorization: Bearer <token>``."""
    with Client(server.url, token=server.token, fingerprint=server.fingerprint) as client:
        assert client.info()["api_version"] == "1.0"
        assert client.list_instances() == []
    assert server.authorizations() == [f"Bearer {server.token}"] * 2


def test_changed_certificate_is_certificate_mismatch(server: TlsServer, other_pin: str) -> None:
    """A certificate other than the pinned one fails with certificate_mismatch, naming both
    fingerprints, before anything (the token) is sent."""
    with (
        Client(server.url, token=server.token, fingerprint=other_pin) as client,
        pytest.raises(ApiError) as info,
    ):
        client.info()
    assert info.value.code == "certificate_mismatch"
    assert other_pin in info.value.message and server.fingerprint in info.value.message
    assert server.headers == []


def test_async_client_checks_the_pin_too(server: TlsServer, other_pin: str) -> None:
    """The anyio path (memory BIO) checks the pin like the sync socket path."""

    async def scenario() -> None:
        token = server.token
        async with AsyncClient(server.url, token=token, fingerprint=server.fingerprint) as good:
            assert (await good.info())["api_version"] == "1.0"
        async with AsyncClient(server.url, token=token, fingerprint=other_pin) as bad:
            with pytest.raises(ApiError) as info:
                await bad.info()
        assert info.value.code == "certificate_mismatch"

    asyncio.run(scenario())


def test_websocket_uses_pin_and_token(server: TlsServer, other_pin: str) -> None:
    """The events websocket opens through the pin with the token; a wrong pin is
    certificate_mismatch (asyncio's SSL protocol path)."""

    async def open_events(pin: str) -> None:
        target = Client(server.url, token=server.token, fingerprint=pin).websocket("/1.0/events")
        try:
            async with target.connect("after=0"):
                pass
        except OSError as err:
            raise target.error(err) from err

    asyncio.run(open_events(server.fingerprint))
    assert server.authorizations() == [f"Bearer {server.token}"]
    with pytest.raises(ApiError) as info:
        asyncio.run(open_events(other_pin))
    assert info.value.code == "certificate_mismatch"


def test_fetch_fingerprint_sees_the_served_certificate(server: TlsServer) -> None:
    """First contact reads the fingerprint the daemon prints at start."""
    assert fetch_fingerprint("127.0.0.1", server.port) == server.fingerprint


@pytest.mark.parametrize(
    "spelling",
    [
        "ab" * 32,
        "SHA256:" + ":".join(["AB"] * 32),
        "sha256 Fingerprint=" + ":".join(["ab"] * 32),
    ],
)
def test_fingerprint_spellings(spelling: str) -> None:
    """Any case, colons or not, a sha256 prefix or openssl's output: one canonical form."""
    assert normalize_fingerprint(spelling) == ":".join(["AB"] * 32)


def test_malformed_fingerprint_is_refused() -> None:
    with pytest.raises(ValueError, match="64 hex digits"):
        normalize_fingerprint("AB:CD")
