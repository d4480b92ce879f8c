"""The daemon serves the web UI: the app shell at ``/``, its modules under ``/ui/``, the
npm libraries under ``/ui/vendor/``, without credentials and without leaving those folders."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from virtfleet.api.webui import vendor_dir
from virtfleet.app.bootstrap import Platform
from virtfleet.model.auth import Role

from .accounts import Accounts


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


async def test_every_answer_carries_a_csp_and_frame_protection(
    anonymous: httpx.AsyncClient,
) -> None:
    """The UI, its modules, API answers and errors all carry the Content-Security-Policy
    (scripts from this server only, no framing) and X-Frame-Options."""
    for path in ("/", "/ui/js/app.js", "/1.0/instances", "/nowhere"):
        r = await anonymous.get(path)
        csp = r.headers.get("content-security-policy", "")
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp, path
        assert "unsafe-inline" not in csp.split("script-src")[1].split(";")[0], path
        assert r.headers["x-frame-options"] == "DENY", path
        assert r.headers["x-content-type-options"] == "nosniff", path


async def test_api_docs_need_a_login(anonymous: httpx.AsyncClient, accounts: Accounts) -> None:
    """/docs and /openapi.json answer 401 without credentials (and /redoc is gone); a
    logged-in viewer gets them, the page under a CSP that allows its one inline script
    by hash only."""
    for path in ("/docs", "/openapi.json"):
        r = await anonymous.get(path)
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthenticated", path
    assert (await anonymous.get("/redoc")).status_code == 404
    viewer = await accounts.cookie(Role.VIEWER)
    doc = await viewer.get("/openapi.json")
    assert doc.status_code == 200 and "/1.0/instances" in doc.json()["paths"]
    page = await viewer.get("/docs")
    assert page.status_code == 200 and "SwaggerUIBundle" in page.text
    script_src = page.headers["content-security-policy"].split("script-src")[1].split(";")[0]
    assert "'sha256-" in script_src and "unsafe-inline" not in script_src
