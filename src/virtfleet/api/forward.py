"""Any member serves the whole cluster: requests that need the owning host are proxied to it.

Owns the API-level proxy between cluster members, in two ASGI middlewares:
- ``MemberAuthMiddleware`` (the owner's side): a request carrying a member credential
  (``service.membercred``) is verified (method, target, date, body hash); its asserted
  user becomes the request's principal (``via`` ``forwarded``) and the forwarding host
  is noted for the audit. A request that claims to be forwarded is never forwarded
  again, whether its credential verifies or not (so forwarding never loops); one that
  fails is 401 ``member_auth_failed`` at the route's guard.
- ``ForwardMiddleware`` (the receiving member's side): a request that needs the
  instance's own host (``owner_bound``: snapshots, consoles, VNC, serial log,
  screenshot, guest agent, live resources and metrics, container exec/limits/rootfs
  snapshots, OVA and disk export, backup of it and restore into it) about an instance
  another host owns is sent to that host's API (its URL and pinned certificate from its
  host record) with the user's credentials replaced by the member credential; the
  answer streams back as it comes, and websockets are relayed both ways with their
  close codes. An owner offline or not answering is 503 ``owner_unreachable`` naming
  it, and nothing was changed. Operations started on the owner are records in the
  shared store, so any member shows and waits on them.
Must not decide ownership (``service.forwarding``) nor what a route does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import websockets
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect
from websockets.asyncio.client import ClientConnection, connect

from virtfleet.api.auth import AUTH_ERROR, FORWARDED_BY, PRINCIPAL, principal_of, request_state
from virtfleet.api.errors import error_response
from virtfleet.api.idempotency import replaying
from virtfleet.api.ws import close_with, race
from virtfleet.errors import MemberAuthError, OwnerUnreachableError, VirtfleetError
from virtfleet.model.auth import ANONYMOUS, Principal, Role
from virtfleet.service.forwarding import ForwardingService, OwnerTarget
from virtfleet.service.membercred import HEADERS, SIGNATURE
from virtfleet.util.pinning import find_mismatch, pinned_context

log = logging.getLogger(__name__)

FORWARDED = "virtfleet.forwarded"  # scope key: this request came from a member; never forward
SERVED_BY = "x-virtfleet-served-by"  # response header: the owner that answered
_INSTANCE = re.compile(r"^/1\.0/instances/(?P<name>[^/]+)/(?P<rest>.+)$")
_OWNER_BOUND = re.compile(
    r"^(snapshots(/[^/]+(/revert)?)?|console|console/vnc-ticket|vnc|screenshot|log|guest"
    r"|resources|metrics|exec|limits|rootfs-snapshots(/[^/]+(/restore)?)?|export-ova"
    r"|disks/[^/]+/export)$"
)
# Backups name their instance in the body: POST /1.0/backups {instance}, restore {target}.
_BODY_NAMED = {"/1.0/backups": "instance"}
_RESTORE = re.compile(r"^/1\.0/backups/[^/]+/restore$")
_DROPPED = {  # hop-by-hop, the user's own credentials, and what the owner recomputes
    "host", "authorization", "cookie", "connection", "keep-alive", "transfer-encoding",
    "te", "trailer", "upgrade", "proxy-authorization", "content-length", "date", "server",
    "sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions",
    "sec-websocket-protocol", *HEADERS,
}  # fmt: skip
TIMEOUT = httpx.Timeout(300.0, connect=5.0)  # exec and waits may take minutes; a dead peer not
IDLE_S = 2.0  # seconds an unused connection to a member stays open
Key = tuple[str, str | None]  # an owner's API URL and certificate fingerprint


def owner_bound(path: str) -> str | None:
    """The instance a path's request needs the owner for (None: any member answers it)."""
    found = _INSTANCE.match(path)
    if found and _OWNER_BOUND.match(found["rest"]):
        return found["name"]
    return None


def _named_in_body(method: str, path: str, body: bytes) -> str | None:
    field = _BODY_NAMED.get(path) or ("target" if _RESTORE.match(path) else None)
    if method != "POST" or field is None:
        return None
    try:
        value = json.loads(body).get(field)
    except (ValueError, AttributeError):
        return None  # the route answers the malformed body itself
    return value if isinstance(value, str) else None


async def _instance_of(scope: Scope, receive: Receive) -> tuple[str | None, bytes, Receive]:
    """The instance an owner-bound request is about (its path, or a backup's body), the
    body if it had to be read, and the ``receive`` the app reads the body from."""
    name = owner_bound(scope["path"])
    path = scope["path"]
    if name is not None or scope["type"] != "http" or scope["method"] != "POST":
        return name, b"", receive
    if path not in _BODY_NAMED and not _RESTORE.match(path):
        return None, b"", receive
    body, receive = await _read_body(receive)
    return _named_in_body(scope["method"], path, body), body, receive


def _target_of(scope: Scope) -> str:
    """The request's path and query as sent (what the credential signs)."""
    path = scope.get("raw_path") or scope["path"].encode()
    query = scope.get("query_string", b"")
    return str((path + (b"?" + query if query else b"")).decode("latin-1"))


async def _read_body(receive: Receive) -> tuple[bytes, Receive]:
    """The whole request body, and a ``receive`` that replays it to the app."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break  # a disconnect: the app sees an empty body
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    body = b"".join(chunks)
    return body, replaying(body, receive)


def _signed(scope: Scope) -> bool:
    return any(key == SIGNATURE.encode() for key, _ in scope.get("headers", ()))


class MemberAuthMiddleware:
    """Verifies member credentials; the asserted user becomes the principal."""

    def __init__(self, app: ASGIApp, forwarding: ForwardingService | None) -> None:
        self.app = app
        self.forwarding = forwarding

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or not _signed(scope):
            await self.app(scope, receive, send)
            return
        scope = {**scope, FORWARDED: True}
        body = b""
        if scope["type"] == "http":
            body, receive = await _read_body(receive)
        state = request_state(scope)
        state.pop(PRINCIPAL, None)  # only the member's assertion counts now
        try:
            if self.forwarding is None:
                raise MemberAuthError("this host takes no forwarded requests (not in a cluster)")
            method = scope.get("method", "GET")
            found = await self.forwarding.credentials.verify(
                Headers(scope=scope), method, _target_of(scope), body
            )
            name = await self.forwarding.host_name(found.host_id)
        except VirtfleetError as err:
            state[AUTH_ERROR] = err
        else:
            state[PRINCIPAL] = found.principal
            state[FORWARDED_BY] = name
        await self.app(scope, receive, send)


class Forwarder:
    """The proxy's HTTP clients, one per owner: kept while requests come (a TLS handshake
    per request is slow), closed ``idle_s`` after the last one ends (an idle TLS connection
    holds the owner's shutdown until asyncio's 30 s SSL close wait gives up)."""

    def __init__(self, forwarding: ForwardingService | None, idle_s: float = IDLE_S) -> None:
        self.forwarding = forwarding
        self.idle_s = idle_s
        self.clients: dict[Key, httpx.AsyncClient] = {}
        self.busy: dict[Key, int] = {}
        self.timers: dict[Key, asyncio.TimerHandle] = {}
        self.closing: set[asyncio.Task[None]] = set()

    @contextlib.asynccontextmanager
    async def using(self, target: OwnerTarget) -> AsyncIterator[httpx.AsyncClient]:
        """The client for ``target``, counted busy for the block."""
        key = (target.api_url, target.fingerprint)
        if (timer := self.timers.pop(key, None)) is not None:
            timer.cancel()
        if key not in self.clients:
            verify = pinned_context(target.fingerprint) if target.fingerprint else True
            self.clients[key] = httpx.AsyncClient(verify=verify, timeout=TIMEOUT)
        self.busy[key] = self.busy.get(key, 0) + 1
        try:
            yield self.clients[key]
        finally:
            self.busy[key] -= 1
            if not self.busy[key]:
                loop = asyncio.get_running_loop()
                self.timers[key] = loop.call_later(self.idle_s, self._expire, key)

    def _expire(self, key: Key) -> None:
        self.timers.pop(key, None)
        client = self.clients.pop(key, None)
        if client is not None and not self.busy.get(key):
            task = asyncio.create_task(client.aclose())
            self.closing.add(task)
            task.add_done_callback(self.closing.discard)

    async def aclose(self) -> None:
        for timer in self.timers.values():
            timer.cancel()
        self.timers.clear()
        for client in self.clients.values():
            await client.aclose()
        self.clients.clear()
        await asyncio.gather(*self.closing, return_exceptions=True)


class ForwardMiddleware:
    """Sends owner-bound requests about another host's instance to that host."""

    def __init__(self, app: ASGIApp, forwarder: Forwarder) -> None:
        self.app = app
        self.forwarder = forwarder

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        forwarding = self.forwarder.forwarding
        if forwarding is None or scope["type"] not in ("http", "websocket") or FORWARDED in scope:
            await self.app(scope, receive, send)
            return
        name, body, receive = await _instance_of(scope, receive)
        principal = _asserted(scope)
        if name is None or principal is None:
            await self.app(scope, receive, send)
            return
        try:
            target = await forwarding.target(name)
        except VirtfleetError as err:
            await _refuse(scope, receive, send, err)
            return
        if target is None:
            await self.app(scope, receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send, target, principal, body)
        else:
            await self._websocket(scope, receive, send, target, principal)

    async def _headers(
        self, scope: Scope, target: OwnerTarget, principal: Principal, body: bytes
    ) -> dict[str, str]:
        assert self.forwarder.forwarding is not None
        kept = {k: v for k, v in Headers(scope=scope).items() if k not in _DROPPED}
        method = scope.get("method", "GET")
        creds = self.forwarder.forwarding.credentials
        return kept | await creds.sign(method, _target_of(scope), body, principal)

    async def _http(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        target: OwnerTarget,
        principal: Principal,
        body: bytes,
    ) -> None:
        if not body and scope["method"] not in ("GET", "HEAD"):
            body, receive = await _read_body(receive)
        headers = await self._headers(scope, target, principal, body)
        async with self.forwarder.using(target) as client:
            request = client.build_request(
                scope["method"], target.api_url + _target_of(scope), headers=headers, content=body
            )
            try:
                response = await client.send(request, stream=True)
            except httpx.TransportError as err:
                await _refuse(scope, receive, send, _unreachable(target, err))
                return
            try:
                await _relay_response(response, send, target)
            finally:
                await response.aclose()

    async def _websocket(
        self, scope: Scope, receive: Receive, send: Send, target: OwnerTarget, principal: Principal
    ) -> None:
        ws = WebSocket(scope, receive, send)
        headers = await self._headers(scope, target, principal, b"")
        url = re.sub(r"^http", "ws", target.api_url) + _target_of(scope)
        ssl = pinned_context(target.fingerprint) if target.fingerprint else None
        offered = list(scope.get("subprotocols") or [])
        try:
            upstream = await connect(
                url, ssl=ssl, additional_headers=headers, open_timeout=5.0, max_size=None,
                subprotocols=offered or None,
            )  # fmt: skip
        except (OSError, TimeoutError, websockets.InvalidHandshake) as err:
            await ws.accept()
            error = _unreachable(target, err)
            await close_with(ws, 4000 + error.status, error.message)
            return
        async with upstream:
            await ws.accept(subprotocol=upstream.subprotocol)
            if await race(_to_owner(ws, upstream), _to_client(ws, upstream)) == 1:
                code = upstream.close_code or 1000
                reason = upstream.close_reason or ""
                await close_with(ws, 1000 if code in (1005, 1006) else code, reason)


def _asserted(scope: Scope) -> Principal | None:
    """Whom the forwarded request speaks for: the principal, or (a VNC websocket with a
    ticket, which the owner redeems) anonymous."""
    principal = principal_of(scope)
    if (
        principal is None
        and scope["type"] == "websocket"
        and b"ticket=" in scope.get("query_string", b"")
    ):
        return Principal(username=ANONYMOUS, role=Role.VIEWER, via="forwarded")
    return principal


async def _relay_response(response: httpx.Response, send: Send, target: OwnerTarget) -> None:
    headers = [
        (k.encode("latin-1"), v.encode("latin-1"))
        for k, v in response.headers.multi_items()
        if k.lower() not in _DROPPED or k.lower() == "content-length"
    ]
    headers.append((SERVED_BY.encode(), target.host_name.encode()))
    await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
    async for chunk in response.aiter_raw():
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _to_owner(ws: WebSocket, upstream: ClientConnection) -> None:
    while True:
        message = await ws.receive()
        if message["type"] == "websocket.disconnect":
            return
        data: Any = message.get("bytes")
        try:
            await upstream.send(data if data is not None else message.get("text") or "")
        except websockets.ConnectionClosed:
            return


async def _to_client(ws: WebSocket, upstream: ClientConnection) -> None:
    try:
        async for data in upstream:
            if isinstance(data, bytes):
                await ws.send_bytes(data)
            else:
                await ws.send_text(data)
    except websockets.ConnectionClosed:
        pass  # the owner closed: its code and reason are relayed by the caller
    except WebSocketDisconnect:
        pass


def _unreachable(target: OwnerTarget, err: BaseException) -> OwnerUnreachableError:
    mismatch = find_mismatch(err)
    why = "its certificate is not the one in its host record" if mismatch else _said(err)
    log.warning("forwarding to %s failed: %s", target.label, why)
    return OwnerUnreachableError(
        f"the owning host {target.label} at {target.api_url} does not answer: {why}",
        host=target.host_id,
    )


def _said(err: BaseException) -> str:
    """One line of what went wrong: the system error behind it if any (httpx and websockets
    word the same refusal differently), else its message, else its type."""
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno:
            return os.strerror(seen.errno)
        seen = seen.__cause__ or seen.__context__
    return " ".join(str(err).split()) or type(err).__name__


async def _refuse(scope: Scope, receive: Receive, send: Send, err: VirtfleetError) -> None:
    if scope["type"] == "websocket":
        ws = WebSocket(scope, receive, send)
        await ws.accept()
        await close_with(ws, 4000 + err.status, err.message)
        return
    await error_response(err.code, err.message, err.status)(scope, receive, send)
