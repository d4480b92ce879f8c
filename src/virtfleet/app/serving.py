"""Serving one API on several listeners: the Unix socket and TCP, in one event loop.

Owns parsing ``--listen`` (``HOST:PORT``, ``[V6]:PORT``, repeatable or
comma-separated, ``none`` for no TCP), the TLS rule (any non-loopback
address is served over TLS; loopback only with ``--tls``), binding every
socket before anything starts (a busy port is a clean error, not a half-started
daemon), and running one ``uvicorn.Server`` per listener with the app's
lifespan (the platform's start/stop) run exactly once around all of them.
Must not wire platform components (``bootstrap``) nor decide who is
authenticated (the caller hands each listener its ASGI app).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import ssl
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import uvicorn
from fastapi import FastAPI
from starlette.types import ASGIApp

from virtfleet.errors import ConflictError, InvalidInputError
from virtfleet.util.net import is_loopback

DEFAULT_LISTEN = "127.0.0.1:8006"
DEFAULT_PORT = 8006


@dataclass(frozen=True)
class Endpoint:
    """One TCP address to listen on; ``tls`` says whether it is served over HTTPS."""

    host: str
    port: int
    tls: bool

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"


@dataclass
class Listener:
    """A bound (not yet listening) socket, the app served on it and how it is named."""

    name: str
    sock: socket.socket
    app: ASGIApp
    tls: tuple[Path, Path] | None = None  # (certificate, key)
    unix_path: Path | None = None


def parse_listen(values: Iterable[str], tls: bool = False) -> list[Endpoint]:
    """The endpoints ``--listen`` values name; ``InvalidInputError`` for a malformed one.

    ``none`` (alone) means no TCP listener; non-loopback endpoints always use TLS.
    """
    specs = [part.strip() for value in values for part in value.split(",") if part.strip()]
    if any(s.lower() == "none" for s in specs):
        if len(specs) > 1:
            raise InvalidInputError("--listen none cannot be combined with addresses")
        return []
    endpoints: list[Endpoint] = []
    for spec in specs or [DEFAULT_LISTEN]:
        host, port = _split_host_port(spec)
        ep = Endpoint(host, port, tls or not is_loopback(host))
        if ep not in endpoints:
            endpoints.append(ep)
    return endpoints


def _split_host_port(spec: str) -> tuple[str, int]:
    if spec.startswith("["):
        host, sep, rest = spec[1:].partition("]")
        port_text = rest.removeprefix(":") if sep else ""
    else:
        host, _, port_text = spec.rpartition(":") if ":" in spec else (spec, "", "")
        if ":" in host:
            raise InvalidInputError(f"--listen {spec!r}: write IPv6 addresses as [ADDR]:PORT")
    try:
        port = int(port_text) if port_text else DEFAULT_PORT
    except ValueError:
        port = -1
    if not host or host.isdigit() or not 0 <= port <= 65535:
        raise InvalidInputError(f"--listen {spec!r}: expected HOST:PORT, [IPV6]:PORT or none")
    return host, port


def bind_tcp(ep: Endpoint) -> socket.socket:
    """A socket bound to ``ep`` (connections are refused until it is served)."""
    try:
        infos = socket.getaddrinfo(ep.host, ep.port, type=socket.SOCK_STREAM)
        family, _, _, _, addr = infos[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as err:
        raise ConflictError(f"cannot listen on {ep.url}: {err.strerror or err}") from err
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(addr)
    except OSError as err:
        sock.close()
        raise ConflictError(f"cannot listen on {ep.url}: {err.strerror or err}") from err
    return sock


def bind_unix(path: Path) -> socket.socket:
    """A Unix socket bound at ``path`` with mode 0600: whoever reaches it is local root."""
    path.unlink(missing_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)  # no window in which the socket is open to others
    try:
        sock.bind(str(path))
    except OSError as err:
        sock.close()
        raise ConflictError(f"cannot listen on {path}: {err.strerror or err}") from err
    finally:
        os.umask(old)
    return sock


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signals to ``run_listeners`` (it stops all servers)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _config(listener: Listener) -> uvicorn.Config:
    cert, key = listener.tls if listener.tls else (None, None)
    config = uvicorn.Config(
        listener.app,
        log_level="warning",
        http="httptools",  # the C parser (h11, uvicorn's fallback, is pure Python)
        ws="websockets-sansio",
        lifespan="off",  # the platform's lifespan runs once, in run_listeners
        proxy_headers=False,  # no proxy in front: never trust X-Forwarded-For
        ssl_certfile=str(cert) if cert else None,
        ssl_keyfile=str(key) if key else None,
    )
    try:
        config.load()
    except (OSError, ssl.SSLError) as err:
        raise InvalidInputError(f"cannot load the TLS certificate or key: {err}") from err
    return config


def prepare(listeners: Sequence[Listener]) -> list[uvicorn.Server]:
    """One server per listener, TLS material loaded (errors surface before start-up)."""
    return [_Server(_config(listener)) for listener in listeners]


async def run_listeners(
    app: FastAPI, listeners: Sequence[Listener], servers: Sequence[uvicorn.Server]
) -> None:
    """Run ``app``'s lifespan once and every server inside it until SIGINT/SIGTERM
    (or until one server stops); then stop them all, then the lifespan."""
    loop = asyncio.get_running_loop()

    def stop() -> None:
        for server in servers:
            server.should_exit = True

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)
    try:
        async with app.router.lifespan_context(app):
            tasks = [
                asyncio.create_task(s.serve(sockets=[lst.sock]))
                for s, lst in zip(servers, listeners, strict=True)
            ]
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            stop()
            await asyncio.gather(*tasks, return_exceptions=True)
            for task in done:
                task.result()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        for listener in listeners:
            listener.sock.close()
            if listener.unix_path is not None:
                listener.unix_path.unlink(missing_ok=True)
