"""Who is asking and may they: credentials -> ``Principal`` (middleware), role guards (routes).

Owns the HTTP side of authentication:
- ``local_admin(app)`` marks every request through it as the local root user
  (``root@local``, admin); the composition root wraps the Unix-socket listener
  with it, never a TCP one. Credentials sent anyway are honoured instead.
- ``AuthMiddleware`` resolves ``Authorization: Bearer vf_<id>.<secret>`` (an API
  token), else the ``vf_session`` cookie (a login; a change must echo the
  ``vf_csrf`` cookie in ``X-CSRF-Token``, and a websocket must come from the
  same origin), else the local mark, into ``scope["state"]["principal"]``
  (or the reason it failed); it rejects nothing itself.
- ``require(role)`` is the per-route guard: 401 ``unauthenticated`` without a
  principal, 403 ``forbidden`` below ``role``.
Must not decide account rules (``service.auth``/``service.tokens`` do).
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import Depends
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send

from virtfleet.errors import AuthError, CsrfError, ForbiddenError, VirtfleetError
from virtfleet.model.auth import LOCAL_ROOT, Principal, Role
from virtfleet.service import Services

log = logging.getLogger(__name__)

SESSION_COOKIE = "vf_session"
CSRF_COOKIE = "vf_csrf"
CSRF_HEADER = "X-CSRF-Token"
LOCAL_MARK = "virtfleet.local"  # ASGI scope key set by ``local_admin``; clients cannot send it
FORWARDED_BY = "forwarded_by"  # key in scope["state"]: the member that forwarded it (api.forward)
PRINCIPAL = "principal"  # key in scope["state"] (the idempotency middleware reads it too)
AUTH_ERROR = "auth_error"
CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
LOCAL_PRINCIPAL = Principal(username=LOCAL_ROOT, role=Role.ADMIN, via="local")
NO_CREDENTIALS = (
    "authentication required: log in (POST /1.0/login) or send 'Authorization: Bearer <token>'"
)


def local_admin(app: ASGIApp) -> ASGIApp:
    """``app`` with every HTTP/websocket request marked as coming over the local socket."""

    async def local(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            scope = {**scope, LOCAL_MARK: True}
        await app(scope, receive, send)

    return local


def is_local(scope: Scope) -> bool:
    return scope.get(LOCAL_MARK) is True


def source_of(scope: Scope) -> str:
    """Where a request came from: ``unix`` over the local socket, else the peer address
    (and the cluster member that forwarded it, if one did)."""
    if is_local(scope):
        return "unix"
    client = scope.get("client")
    peer = str(client[0]) if client else "unknown"
    by = scope.get("state", {}).get(FORWARDED_BY)
    return f"{peer} (forwarded by host {by})" if by else peer


def request_state(scope: Scope) -> dict[str, Any]:
    """The per-request state dict (``request.state``), created if missing."""
    state: dict[str, Any] = scope.setdefault("state", {})
    return state


def principal_of(scope: Scope) -> Principal | None:
    found = request_state(scope).get(PRINCIPAL)
    return found if isinstance(found, Principal) else None


class AuthMiddleware:
    """Puts the request's ``Principal`` (or the ``VirtfleetError`` why not) in its state."""

    def __init__(self, app: ASGIApp, services: Services) -> None:
        self.app = app
        self.services = services

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            state = request_state(scope)
            try:
                principal = await authenticate(HTTPConnection(scope), self.services)
            except VirtfleetError as err:
                state[AUTH_ERROR] = err
            except Exception:  # a broken store must not become a plain-text 500
                log.exception("checking credentials failed")
                state[AUTH_ERROR] = VirtfleetError("cannot check credentials; see the daemon log")
            else:
                if principal is not None:
                    state[PRINCIPAL] = principal
        await self.app(scope, receive, send)


async def authenticate(conn: HTTPConnection, services: Services) -> Principal | None:
    """The principal of the credentials sent (a token wins over a cookie), else the local
    root for the Unix socket, else None; ``VirtfleetError`` for bad credentials."""
    authorization = conn.headers.get("authorization")
    if authorization is not None:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthError("the Authorization header must be 'Bearer <token>'")
        return await services.tokens.authenticate(token.strip())
    cookie = conn.cookies.get(SESSION_COOKIE)
    if cookie:
        return await _session(conn, services, cookie)
    return LOCAL_PRINCIPAL if is_local(conn.scope) else None


async def _session(conn: HTTPConnection, services: Services, cookie: str) -> Principal:
    websocket = conn.scope["type"] == "websocket"
    change = not websocket and conn.scope["method"] in CHANGING
    csrf = _double_submitted(conn) if change else None
    principal = await services.auth.authenticate_session(cookie, csrf)
    if change and csrf is None:
        raise CsrfError(
            f"a change made with a session cookie must echo the {CSRF_COOKIE} cookie "
            f"in the {CSRF_HEADER} header"
        )
    if websocket:
        _same_origin(conn)
    return principal


def _double_submitted(conn: HTTPConnection) -> str | None:
    """The CSRF token if the header equals the cookie (double submit), else None."""
    sent, cookie = conn.headers.get(CSRF_HEADER), conn.cookies.get(CSRF_COOKIE)
    if not sent or not cookie or not hmac.compare_digest(sent.encode(), cookie.encode()):
        return None
    return sent


def _same_origin(conn: HTTPConnection) -> None:
    """Browsers send cookies with cross-site websocket handshakes: refuse another origin."""
    origin = conn.headers.get("origin")
    if origin and urlsplit(origin).netloc != conn.headers.get("host", ""):
        raise CsrfError(f"websocket from origin {origin[:80]!r} refused: not this server")


Guard = Callable[[HTTPConnection], Awaitable[Principal]]


def require(role: Role) -> Guard:
    """A FastAPI dependency: the request's principal if its role allows ``role``."""

    async def guard(conn: HTTPConnection) -> Principal:
        state = request_state(conn.scope)
        principal = state.get(PRINCIPAL)
        if not isinstance(principal, Principal):
            error = state.get(AUTH_ERROR)
            raise error if isinstance(error, VirtfleetError) else AuthError(NO_CREDENTIALS)
        if not principal.role.allows(role):
            raise ForbiddenError(
                f"{principal.username} has role {principal.role}; this needs {role} or above"
            )
        return principal

    guard.__name__ = f"require_{role.value}"
    return guard


ANY_USER = Depends(require(Role.VIEWER))
OPERATOR = Depends(require(Role.OPERATOR))
ADMIN = Depends(require(Role.ADMIN))
Viewer = Annotated[Principal, ANY_USER]
Operator = Annotated[Principal, OPERATOR]
Admin = Annotated[Principal, ADMIN]
