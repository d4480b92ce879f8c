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
from virtfleet.api.errors import install_error_handlers
from virtfleet.api.routes import console, events, host, images, instances, operations
from virtfleet.service import Services

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]
API_VERSION = "1.0"


def create_app(services: Services, lifespan: Lifespan | None = None) -> FastAPI:
    """The HTTP + WebSocket API over ``services``; ``lifespan`` wraps start-up/shut-down."""
    app = FastAPI(
        title="virtfleet",
        version=virtfleet.__version__,
        lifespan=lifespan or _no_lifespan,
    )
    app.state.services = services
    app.state.console_sessions = set()
    install_error_handlers(app)
    for module in (instances, console, images, host, operations, events):
        app.include_router(module.router)
    app.add_api_route("/1.0", _info, methods=["GET"], tags=["meta"])
    return app


async def _info() -> dict[str, Any]:
    return {"api_version": API_VERSION, "version": virtfleet.__version__}


@asynccontextmanager
async def _no_lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield
