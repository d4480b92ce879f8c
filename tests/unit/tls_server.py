"""The in-process platform served over HTTPS on a loopback port, for remote and pinning tests.

The functional tests' platform (memory store, fake driver) behind uvicorn with
a fresh self-signed certificate, in a thread. Every request's headers are
recorded, so a test can see what was sent (a token) or that nothing was (a pin
that failed before any request). An operator token is minted at start.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

from tests.functional.platform import make_platform
from tests.threaded_server import in_thread
from virtfleet.api.auth import LOCAL_PRINCIPAL
from virtfleet.app.serving import Endpoint, bind_tcp
from virtfleet.app.tls import generate_self_signed
from virtfleet.model.auth import Role
from virtfleet.util.fingerprint import fingerprint_pem


@dataclass
class TlsServer:
    url: str
    port: int
    fingerprint: str
    data_dir: Path
    token: str = ""  # an operator token minted at start
    headers: list[dict[str, str]] = field(default_factory=list)

    def authorizations(self) -> list[str | None]:
        return [h.get("authorization") for h in self.headers]


def recording(app: ASGIApp, server: TlsServer) -> ASGIApp:
    async def record(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            server.headers.append({k.decode(): v.decode() for k, v in scope["headers"]})
        await app(scope, receive, send)

    return record


def new_certificate(directory: Path) -> tuple[Path, Path, str]:
    cert, key = directory / "server.crt", directory / "server.key"
    generate_self_signed(cert, key, ["127.0.0.1"])
    return cert, key, fingerprint_pem(cert.read_text())


@contextlib.contextmanager
def serve_tls(data_dir: Path) -> Iterator[TlsServer]:
    """The platform on ``https://127.0.0.1:<free port>`` until the block ends."""
    data_dir.mkdir(parents=True, exist_ok=True)
    platform, _ = make_platform(data_dir)
    cert, key, fingerprint = new_certificate(data_dir / "tls")
    sock = bind_tcp(Endpoint("127.0.0.1", 0, tls=True))
    port = sock.getsockname()[1]
    server_info = TlsServer(f"https://127.0.0.1:{port}", port, fingerprint, data_dir)
    config = uvicorn.Config(
        recording(platform.app, server_info),
        log_level="warning",
        ws="websockets-sansio",
        ssl_certfile=str(cert),
        ssl_keyfile=str(key),
        lifespan="off",
    )
    server = uvicorn.Server(config)

    def run() -> None:
        import asyncio

        async def main() -> None:
            async with platform.app.router.lifespan_context(platform.app):
                minted = await platform.services.tokens.create(LOCAL_PRINCIPAL, Role.OPERATOR)
                server_info.token = minted.token
                await server.serve(sockets=[sock])

        asyncio.run(main())

    with in_thread(server, run, "uvicorn-tls"):
        yield server_info
