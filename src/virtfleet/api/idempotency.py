"""The ``Idempotency-Key`` request header: a retried change is answered once, not done twice.

Owns the HTTP side of idempotency keys for unsafe methods (POST, PUT, PATCH,
DELETE): checking the key (1-255 printable ASCII characters, else 400), the
request fingerprint (method, path, query and body; a JSON body canonically),
capturing the first response and replaying it (marked ``Idempotent-Replayed:
true``). A retry while the first request runs answers 409
``idempotency_in_progress`` at once (with ``Retry-After``) rather than waiting.
Responses that must not be kept (5xx; 401, 403 and 429, which are about the
caller rather than the request; ``Cache-Control: no-store``; ``Set-Cookie``;
bodies over ``MAX_STORED_BYTES``) are not recorded: the key is freed and a
retry runs again. Must not decide the rules (``service/idempotency.py`` does)
nor touch the store.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from virtfleet.api.errors import error_body
from virtfleet.api.limits import header
from virtfleet.errors import IdempotencyInProgressError, InvalidInputError, VirtfleetError
from virtfleet.service.idempotency import IdempotencyService, Reservation, StoredResponse

HEADER = b"idempotency-key"
MAX_KEY_CHARS = 255
MAX_STORED_BYTES = 256 * 1024
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
RETRY_AFTER_S = 1
NOT_KEPT = frozenset({401, 403, 429})  # about the caller: a retry may well differ
PrincipalOf = Callable[[Scope], str]


def default_principal(scope: Scope) -> str:
    """Who sent the request, for scoping keys: the ``principal`` an outer layer put in the
    request state (its username), else a hash of the Authorization header, else ``""``."""
    principal = scope.get("state", {}).get("principal")
    username = getattr(principal, "username", None)
    if isinstance(username, str):
        return f"user:{username}"
    auth = b"\0".join(header(scope, b"authorization"))
    return "credential:" + hashlib.sha256(auth).hexdigest() if auth else ""


def check_key(values: list[bytes]) -> str:
    """The one key sent, or ``InvalidInputError``: too long, empty, control characters..."""
    if len(values) != 1:
        raise InvalidInputError("send exactly one Idempotency-Key header")
    key = values[0].decode("latin-1")
    if not 1 <= len(key) <= MAX_KEY_CHARS:
        raise InvalidInputError(f"Idempotency-Key must be 1-{MAX_KEY_CHARS} characters long")
    if not all(" " <= ch <= "~" for ch in key):
        raise InvalidInputError("Idempotency-Key must be printable ASCII (no control characters)")
    return key


def fingerprint(scope: Scope, body: bytes) -> str:
    """SHA-256 over method, path, query and body; equal JSON bodies hash equally."""
    digest = hashlib.sha256()
    for part in (scope["method"].encode(), scope["path"].encode(), scope.get("query_string", b"")):
        digest.update(part + b"\0")
    digest.update(_canonical(body))
    return digest.hexdigest()


def _canonical(body: bytes) -> bytes:
    try:
        value = json.loads(body)
    except ValueError:  # not JSON (or not UTF-8): the bytes as they are
        return body
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


class IdempotencyMiddleware:
    """Answers requests carrying an ``Idempotency-Key`` through ``IdempotencyService``."""

    def __init__(self, app: ASGIApp, principal_of: PrincipalOf = default_principal) -> None:
        self.app = app
        self.principal_of = principal_of

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        service = _service(scope)
        values = header(scope, HEADER) if scope["type"] == "http" else []
        if service is None or not values or scope["method"] not in UNSAFE_METHODS:
            await self.app(scope, receive, send)
            return
        try:
            key = check_key(values)
            body = await _read_body(receive)
            begun = await service.begin(self.principal_of(scope), key, fingerprint(scope, body))
        except VirtfleetError as err:
            await _send_error(send, err)
            return
        if isinstance(begun, StoredResponse):
            await _replay(send, begun)
            return
        await self._run(scope, replaying(body, receive), send, service, begun)

    async def _run(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        service: IdempotencyService,
        reservation: Reservation,
    ) -> None:
        capture = _Capture(send)
        try:
            await self.app(scope, receive, capture.send)
        except BaseException:
            await service.abandon(reservation)
            raise
        response = capture.response()
        if response is None:
            await service.abandon(reservation)
        else:
            await service.finish(reservation, response)


class _Capture:
    """Forwards the response and keeps a copy of it, unless it must not be kept."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self.status = 0
        self.content_type = ""
        self.keep = True
        self.body = bytearray()

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = int(message["status"])
            self._headers(message.get("headers", ()))
        elif message["type"] == "http.response.body" and self.keep:
            self.body += message.get("body", b"")
            self.keep = len(self.body) <= MAX_STORED_BYTES
        await self._send(message)

    def _headers(self, headers: Any) -> None:
        for name, value in headers:
            name = bytes(name).lower()
            if name == b"content-type":
                self.content_type = bytes(value).decode("latin-1")
            elif name == b"set-cookie" or (
                name == b"cache-control" and b"no-store" in bytes(value).lower()
            ):
                self.keep = False

    def response(self) -> StoredResponse | None:
        if not self.keep or not 100 <= self.status < 500 or self.status in NOT_KEPT:
            return None
        return StoredResponse(self.status, self.content_type, bytes(self.body))


def _service(scope: Scope) -> IdempotencyService | None:
    app = scope.get("app")
    services = getattr(getattr(app, "state", None), "services", None)
    service = getattr(services, "idempotency", None)
    return service if isinstance(service, IdempotencyService) else None


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise InvalidInputError("the client went away while sending the body")
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def replaying(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands the app the body already read, then defers to the server."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


async def _replay(send: Send, stored: StoredResponse) -> None:
    headers = [(b"content-length", str(len(stored.body)).encode())]
    if stored.content_type:
        headers.append((b"content-type", stored.content_type.encode("latin-1")))
    headers.append((b"idempotent-replayed", b"true"))
    await send({"type": "http.response.start", "status": stored.status, "headers": headers})
    await send({"type": "http.response.body", "body": stored.body})


async def _send_error(send: Send, err: VirtfleetError) -> None:
    body = json.dumps(error_body(err.code, err.message, err.status)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if isinstance(err, IdempotencyInProgressError):
        headers.append((b"retry-after", str(RETRY_AFTER_S).encode()))
    await send({"type": "http.response.start", "status": err.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
