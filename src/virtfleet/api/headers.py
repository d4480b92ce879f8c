"""Security headers on every HTTP answer: a Content-Security-Policy and framing protection.

Owns the policy the web UI runs under: scripts, styles, images and connections
(``fetch`` and the console/event websockets) from this server only, no plugins,
no ``<base>`` tricks, and never inside another site's frame (``frame-ancestors
'none'`` plus ``X-Frame-Options: DENY`` for old browsers); ``nosniff`` and no
referrer. Styles may be inline: xterm.js adds ``<style>`` elements at run time.
A response that set its own policy (``/docs``) keeps it. Must not decide who may
read what (``api.auth``).
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CSP_HEADER = "Content-Security-Policy"
POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; connect-src 'self'; font-src 'self'; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
HEADERS = {
    CSP_HEADER: POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class SecurityHeadersMiddleware:
    """Adds ``HEADERS`` to every HTTP response that does not set them itself."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in HEADERS.items():
                    if name not in headers:
                        headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)
