"""The API's own documentation pages, for logged-in users only: ``/openapi.json`` and ``/docs``.

Owns serving the OpenAPI document and the Swagger UI page behind the same guard as
every read (role viewer or above; the browser's session cookie works), and the
page's Content-Security-Policy: Swagger UI comes from its CDN and starts with one
inline script, allowed by its hash, never by ``'unsafe-inline'``. FastAPI's own
unauthenticated ``/docs``, ``/redoc`` and ``/openapi.json`` are switched off in
``create_app``. Must not amend the document (``api.apidoc`` does).
"""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.requests import Request

from virtfleet.api.auth import ANY_USER
from virtfleet.api.headers import CSP_HEADER

OPENAPI_URL = "/openapi.json"
DOCS_URL = "/docs"
SWAGGER_CDN = "https://cdn.jsdelivr.net"
_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)


def install_doc_pages(app: FastAPI) -> None:
    """Serve ``/openapi.json`` and ``/docs`` on ``app`` to authenticated users."""

    async def openapi(request: Request) -> JSONResponse:
        doc: dict[str, Any] = request.app.openapi()
        return JSONResponse(doc)

    async def docs(request: Request) -> HTMLResponse:
        page = get_swagger_ui_html(openapi_url=OPENAPI_URL, title=f"{request.app.title} API")
        page.headers[CSP_HEADER] = docs_policy(bytes(page.body).decode())
        return page

    guard = [ANY_USER]
    app.add_api_route(
        OPENAPI_URL, openapi, methods=["GET"], include_in_schema=False, dependencies=guard
    )
    app.add_api_route(DOCS_URL, docs, methods=["GET"], include_in_schema=False, dependencies=guard)


def docs_policy(html: str) -> str:
    """The CSP of the Swagger UI page: its CDN, and its inline scripts by their hashes."""
    hashes = " ".join(
        f"'sha256-{base64.b64encode(hashlib.sha256(s.encode()).digest()).decode()}'"
        for s in _INLINE_SCRIPT.findall(html)
    )
    return (
        f"default-src 'self'; script-src 'self' {SWAGGER_CDN} {hashes}; "
        f"style-src 'self' {SWAGGER_CDN} 'unsafe-inline'; img-src 'self' data: https:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
    )
