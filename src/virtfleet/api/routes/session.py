"""Routes of ``/1.0/login``, ``/1.0/logout`` and ``/1.0/whoami``: browser sessions and identity.

Owns the session cookies: ``vf_session`` (HttpOnly, SameSite=Strict) carries the
session, ``vf_csrf`` (readable by the page) the token every change made with
the session must echo in ``X-CSRF-Token``; both are ``Secure`` over HTTPS.
Must not check passwords or throttle (``AuthService.login`` does).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from virtfleet.api.auth import (
    CSRF_COOKIE,
    PRINCIPAL,
    SESSION_COOKIE,
    Viewer,
    request_state,
    source_of,
)
from virtfleet.api.deps import ServicesDep
from virtfleet.api.schemas import Login
from virtfleet.model.auth import LoginResult, Principal
from virtfleet.service.auth import NewSession

router = APIRouter(prefix="/1.0", tags=["auth"])


@router.post("/login")
async def login(
    body: Login, request: Request, response: Response, services: ServicesDep
) -> LoginResult:
    """Open a session: sets the session and CSRF cookies; 401 for any bad username/password."""
    session = await services.auth.login(body.username, body.password, source_of(request.scope))
    request_state(request.scope)[PRINCIPAL] = Principal(  # the audit's actor
        username=session.record.username, role=session.role, via="session"
    )
    _set_cookies(response, session, secure=request.url.scheme == "https")
    return LoginResult(
        username=session.record.username,
        role=session.role,
        csrf_token=session.csrf_token,
        expires_at=session.record.expires_at,
    )


@router.post("/logout")
async def logout(principal: Viewer, response: Response, services: ServicesDep) -> dict[str, Any]:
    """End the caller's session (if it used one) and clear the cookies."""
    if principal.via == "session" and principal.session_id:
        await services.auth.logout(principal.session_id)
    response.delete_cookie(SESSION_COOKIE, path="/")
    response.delete_cookie(CSRF_COOKIE, path="/")
    return {"username": principal.username, "logged_out": principal.via == "session"}


@router.get("/whoami")
async def whoami(principal: Viewer) -> Principal:
    return principal


def _set_cookies(response: Response, session: NewSession, secure: bool) -> None:
    max_age = max(1, int((session.record.expires_at - session.record.created_at).total_seconds()))
    common: dict[str, Any] = {"max_age": max_age, "path": "/", "samesite": "strict"}
    response.set_cookie(SESSION_COOKIE, session.cookie, httponly=True, secure=secure, **common)
    response.set_cookie(CSRF_COOKIE, session.csrf_token, httponly=False, secure=secure, **common)
