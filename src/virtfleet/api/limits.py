"""The request body size limit: bodies over ``MAX_BODY_BYTES`` answer 413 ``payload_too_large``.

Owns counting body bytes as they are read (a missing or lying Content-Length
changes nothing) and answering in the one error shape. A declared
Content-Length over the limit is refused before anything is read. Must not
look at what the body says.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from virtfleet.api.errors import error_response
from virtfleet.errors import PayloadTooLargeError

MAX_BODY_BYTES = 1024 * 1024


def header(scope: Scope, name: bytes) -> list[bytes]:
    """Every value of header ``name`` (lower case) in an ASGI ``scope``."""
    return [value for key, value in scope.get("headers", ()) if key == name]


def too_large(limit: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(f"request body is larger than the limit of {limit} bytes")


class BodyLimitMiddleware:
    """Stop reading at ``max_bytes`` and answer 413 instead of whatever the app would."""

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if _declared_length(scope) > self.max_bytes:
            await _answer(scope, receive, send, self.max_bytes)
            return
        guard = _Guard(receive, send, self.max_bytes)
        try:
            await self.app(scope, guard.receive, guard.send)
        except Exception:
            if not guard.exceeded:
                raise
        if guard.exceeded and not guard.started:
            await _answer(scope, receive, send, self.max_bytes)


class _Guard:
    """Counts body bytes; past the limit, reading raises and the app's reply is held back."""

    def __init__(self, receive: Receive, send: Send, limit: int) -> None:
        self._receive, self._send, self._limit = receive, send, limit
        self.received = 0
        self.exceeded = False
        self.started = False

    async def receive(self) -> Message:
        message = await self._receive()
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if self.received > self._limit:
                self.exceeded = True
                raise too_large(self._limit)
        return message

    async def send(self, message: Message) -> None:
        if self.exceeded and not self.started:
            return  # the app's answer to a body it could not read: replaced by the 413
        self.started = self.started or message["type"] == "http.response.start"
        await self._send(message)


def _declared_length(scope: Scope) -> int:
    values = header(scope, b"content-length")
    try:
        return max((int(v) for v in values), default=0)
    except ValueError:
        return 0  # the server rejects a malformed Content-Length before we see it


async def _answer(scope: Scope, receive: Receive, send: Send, limit: int) -> None:
    err = too_large(limit)
    await error_response(err.code, err.message, err.status)(scope, receive, send)
