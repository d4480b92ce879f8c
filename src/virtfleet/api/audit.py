"""The audit middleware: every change request (POST, PUT, PATCH, DELETE) leaves one entry.

Owns what is recorded per request: time, actor (the principal ``AuthMiddleware``
found, or ``anonymous``), source (peer address or ``unix``), method, path, a
summary of query and JSON body with secrets masked (``service.audit.summarize``;
headers, so the Authorization header and cookies, are never looked at) and the
response status, successful or not. Sits outside every other layer so refused
requests (401, 403, 413, 429...) are recorded too. A failed audit write is
logged and never breaks the request. Must not decide who may read the log.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime

import anyio
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from virtfleet.api.auth import CHANGING, principal_of, request_state, source_of
from virtfleet.model.audit import AuditEntry
from virtfleet.model.auth import ANONYMOUS
from virtfleet.model.event import utcnow
from virtfleet.service.audit import AuditService, summarize

log = logging.getLogger(__name__)

MAX_BODY_SEEN = 64 * 1024  # bytes of a body kept for the summary; the rest is only counted


class _Tap:
    """Copies the first ``MAX_BODY_SEEN`` body bytes and notes the response status."""

    def __init__(self, receive: Receive, send: Send) -> None:
        self._receive = receive
        self._send = send
        self.body = bytearray()
        self.body_bytes = 0
        self.status = 500  # if the app ends without answering

    async def receive(self) -> Message:
        message = await self._receive()
        if message["type"] == "http.request":
            chunk = message.get("body", b"")
            self.body_bytes += len(chunk)
            self.body += chunk[: max(0, MAX_BODY_SEEN - len(self.body))]
        return message

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = int(message["status"])
        await self._send(message)


class AuditMiddleware:
    def __init__(self, app: ASGIApp, audit: AuditService) -> None:
        self.app = app
        self.audit = audit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in CHANGING:
            await self.app(scope, receive, send)
            return
        request_state(scope)  # created here so inner layers share it (the principal)
        tap = _Tap(receive, send)
        started, at = time.monotonic(), utcnow()
        try:
            await self.app(scope, tap.receive, tap.send)
        finally:
            with anyio.CancelScope(shield=True):  # a client gone mid-request is audited too
                await self._record(scope, tap, at, time.monotonic() - started)

    async def _record(self, scope: Scope, tap: _Tap, at: datetime, elapsed_s: float) -> None:
        try:
            await self.audit.record(_entry(scope, tap, at, elapsed_s))
        except Exception:  # the audit must never break the request it records
            log.exception("audit write failed for %s %s", scope["method"], scope["path"])


def _entry(scope: Scope, tap: _Tap, at: datetime, elapsed_s: float) -> AuditEntry:
    principal = principal_of(scope)
    query = scope.get("query_string", b"").decode("latin-1")
    content_type = Headers(scope=scope).get("content-type", "")
    complete = tap.body_bytes == len(tap.body)
    return AuditEntry(
        time=at,
        actor=principal.username if principal else ANONYMOUS,
        role=principal.role.value if principal else None,
        via=principal.via if principal else None,
        source=source_of(scope),
        method=scope["method"],
        path=scope["path"],
        summary=summarize(query, bytes(tap.body), content_type, complete),
        status=tap.status,
        duration_ms=round(elapsed_s * 1000, 3),
    )
