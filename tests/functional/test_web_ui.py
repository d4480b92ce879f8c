"""The daemon serves the web UI: the app shell at ``/``, its modules under ``/ui/``, the
npm libraries under ``/ui/vendor/``, without credentials and without leaving those folders."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from virtfleet.api.webui import vendor_dir
from virtfleet.app.bootstrap import Platform


@pytest.fixture
async def anonymous(platform: Platform) -> AsyncIterator[httpx.AsyncClient]:
    """A client as over TCP: no local-root mark, no credentials."""
    transport = httpx.ASGITransport(app=platform.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://virtfleet") as client:
        yield client


async def test_root_serves_the_app_shell(anonymous: httpx.AsyncClient) -> None:
    """``/`` is the HTML page that loads the app module; revalidated on every load."""
    r = await anonymous.get("/")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="/ui/js/app.js">' in r.text
    assert r.headers["cache-control"] == "no-cache"


async def test_modules_are_javascript(anonymous: httpx.AsyncClient) -> None:
    """Browsers only run module scripts served with a JavaScript MIME type."""
    for path in ("/ui/js/app.js", "/ui/js/pages/instances.js", "/ui/js/components/tasks.js"):
        r = await anonymous.get(path)
        assert r.status_code == 200, path
        assert r.headers["content-type"].startswith("text/javascript"), path
    assert (await anonymous.get("/ui/style.css")).headers["content-type"].startswith("text/css")


async def test_vendor_libraries_are_served_when_installed(anonymous: httpx.AsyncClient) -> None:
    """xterm.js and noVNC come from web/node_modules (npm ci in scripts/bootstrap.sh)."""
    if not (vendor_dir() / "@novnc" / "novnc").is_dir():
        pytest.skip("web/node_modules is not installed (scripts/bootstrap.sh runs npm ci)")
    for path in ("@xterm/xterm/lib/xterm.mjs", "@novnc/novnc/core/rfb.js"):
        r = await anonymous.get(f"/ui/vendor/{path}")
        assert r.status_code == 200, path
        assert r.headers["content-type"].startswith("text/javascript"), path


async def test_no_file_outside_the_ui_folders(anonymous: httpx.AsyncClient) -> None:
    """Path traversal stays inside the UI folders, and the API still needs credentials."""
    for path in ("/ui/../api/app.py", "/ui/%2e%2e/api/app.py", "/ui/vendor/../../pyproject.toml"):
        assert (await anonymous.get(path)).status_code == 404, path
    r = await anonymous.get("/1.0/instances")
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "unauthenticated"
