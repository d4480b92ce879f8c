"""The FastAPI app factory: routes, the error mapping, and the ``Services`` it serves.

Owns assembling the app (``create_app``). Must not build services or start the
agent: the composition root (app/bootstrap.py) does, and may pass a
``lifespan`` to run its own start-up and shut-down around the server.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from fastapi import FastAPI

import virtfleet
from virtfleet.api.apidoc import install_openapi
from virtfleet.api.audit import AuditMiddleware
from virtfleet.api.auth import ANY_USER, AuthMiddleware
from virtfleet.api.docpages import install_doc_pages
from virtfleet.api.errors import install_error_handlers
from virtfleet.api.forward import Forwarder, ForwardMiddleware, MemberAuthMiddleware
from virtfleet.api.headers import SecurityHeadersMiddleware
from virtfleet.api.idempotency import IdempotencyMiddleware
from virtfleet.api.limits import BodyLimitMiddleware
from virtfleet.api.routes import audit as audit_routes
from virtfleet.api.routes import (
    backups,
    cluster,
    console,
    containers,
    disks,
    events,
    guest,
    host,
    images,
    instances,
    metrics,
    networks,
    operations,
    ova,
    pools,
    resources,
    session,
    snapshots,
    templates,
    tokens,
    users,
    vnc,
)
from virtfleet.api.webui import install_web_ui
from virtfleet.service import Services

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]
API_VERSION = "1.0"


def create_app(services: Services, lifespan: Lifespan | None = None) -> FastAPI:
    """The HTTP + WebSocket API over ``services``; ``lifespan`` wraps start-up/shut-down."""
    forwarder = Forwarder(services.forwarding)
    app = FastAPI(
        title="virtfleet",
        version=virtfleet.__version__,
        lifespan=_closing(forwarder, lifespan or _no_lifespan),
        # Served by api.docpages behind login instead (FastAPI's own are open to anyone).
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        # No OpenTelemetry here: skip FastAPI's per-request check for configured providers.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.services = services
    app.state.forwarder = forwarder  # its connections to other members close with the app
    app.state.console_sessions = set()
    # add_middleware wraps what is there: the error middleware must wrap these two.
    app.add_middleware(IdempotencyMiddleware)
    # Cluster members: inside the body limit, outside idempotency (the owner keeps the key).
    app.add_middleware(ForwardMiddleware, forwarder=forwarder)
    app.add_middleware(MemberAuthMiddleware, forwarding=services.forwarding)
    app.add_middleware(BodyLimitMiddleware)
    install_error_handlers(app)
    # Outside everything else: refused requests (401, 403, 413...) are audited too.
    app.add_middleware(AuthMiddleware, services=services)
    app.add_middleware(AuditMiddleware, audit=services.audit)
    app.add_middleware(SecurityHeadersMiddleware)  # outermost: every answer, errors too
    modules = (instances, resources, console, vnc, containers, images, host, operations, events)
    for module in (*modules, networks):
        app.include_router(module.router)
    for module in (templates, guest, ova):
        app.include_router(module.router)
    for module in (snapshots, backups, disks, pools):
        app.include_router(module.router)
    for module in (session, users, tokens, audit_routes):
        app.include_router(module.router)
    app.include_router(host.hosts_router)
    app.include_router(cluster.router)
    app.include_router(cluster.join_router)
    app.include_router(metrics.router)
    app.include_router(metrics.scrape)
    app.add_api_route("/1.0", _info, methods=["GET"], tags=["meta"], dependencies=[ANY_USER])
    install_openapi(app)
    install_doc_pages(app)
    install_web_ui(app)  # after the API: /1.0 wins over /ui and /
    return app


async def _info() -> dict[str, Any]:
    return {"api_version": API_VERSION, "version": virtfleet.__version__}


@asynccontextmanager
async def _no_lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield


def _closing(forwarder: Forwarder, lifespan: Lifespan) -> Lifespan:
    """``lifespan``, then the forwarder's connections to other members closed."""

    @asynccontextmanager
    async def run(app: FastAPI) -> AsyncIterator[None]:
        try:
            async with lifespan(app):
                yield
        finally:
            await forwarder.aclose()

    return run
