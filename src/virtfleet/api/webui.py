"""The browser UI's files: ``/`` is the app shell, ``/ui/...`` its modules, ``/ui/vendor/...``
the npm libraries (xterm.js, noVNC) that scripts/bootstrap.sh installs into ``web/node_modules``.

Owns where those files come from and how they are served: read-only, unauthenticated
(they hold no data; the page talks to ``/1.0/...`` like any other client). Must not
serve anything outside these two directories, nor add API routes.
"""

from __future__ import annotations

import mimetypes
import os
from pathlib import Path

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

import virtfleet
from virtfleet.errors import NotFoundError

WEB_DIR = Path(virtfleet.__file__).resolve().parent / "web"
VENDOR_ENV = "VIRTFLEET_WEB_VENDOR"  # overrides where the npm packages are (a node_modules)
# Browsers only run module scripts served as JavaScript; Python 3.11 does not know .mjs.
mimetypes.add_type("text/javascript", ".mjs")
mimetypes.add_type("text/javascript", ".js")
NO_CACHE = {"Cache-Control": "no-cache"}  # revalidate: a new daemon may ship a new UI


def vendor_dir() -> Path:
    """The ``node_modules`` directory the UI's libraries are served from."""
    configured = os.environ.get(VENDOR_ENV)
    if configured:
        return Path(configured)
    return Path(virtfleet.__file__).resolve().parents[2] / "web" / "node_modules"


class _UiFiles(StaticFiles):
    """Static files that browsers revalidate on each load."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(NO_CACHE)
        return response


def install_web_ui(app: FastAPI) -> None:
    """Serve the UI on ``app``: ``/``, ``/ui/vendor/...`` (if installed) and ``/ui/...``."""
    vendor = vendor_dir()
    if vendor.is_dir():
        app.mount("/ui/vendor", StaticFiles(directory=vendor), name="ui-vendor")
    else:
        app.add_api_route(
            "/ui/vendor/{path:path}", _vendor_missing, methods=["GET"], include_in_schema=False
        )
    app.mount("/ui", _UiFiles(directory=WEB_DIR), name="ui")
    app.add_api_route("/", _index, methods=["GET"], include_in_schema=False)


async def _index(request: Request) -> FileResponse:
    return FileResponse(WEB_DIR / "index.html", headers=NO_CACHE)


async def _vendor_missing(path: str) -> Response:
    raise NotFoundError(
        f"web UI library {path!r} is not installed: run scripts/bootstrap.sh (npm ci in web/)"
    )
