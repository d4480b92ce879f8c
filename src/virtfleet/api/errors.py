"""The one error -> HTTP mapping: every error answers ``{"error": {code, message, status}}``.

Owns the translation of ``VirtfleetError`` (its own code/status), request
validation errors and malformed JSON (``invalid_input`` 400, one line naming the
field), unknown routes (404) and anything unexpected (``internal`` 500, the
traceback logged, a generic message sent); on a websocket a ``VirtfleetError``
closes it with code 4000 + status. Must not decide what an error means:
codes and statuses come from ``virtfleet.errors``.
"""

from __future__ import annotations

import logging
from typing import Any, cast

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, ExceptionHandler, Message, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketState

from virtfleet.api.ws import close_with
from virtfleet.errors import InvalidInputError, VirtfleetError
from virtfleet.model.validation import validation_message

log = logging.getLogger(__name__)

HTTP_CODES = {
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "invalid_input",
}


def error_body(code: str, message: str, status: int) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "status": status}}


def error_response(code: str, message: str, status: int) -> JSONResponse:
    return JSONResponse(error_body(code, message, status), status_code=status)


async def _on_virtfleet(request: Request, exc: Exception) -> JSONResponse | None:
    assert isinstance(exc, VirtfleetError)
    if isinstance(request, WebSocket):  # e.g. a role guard refused it: close 4000 + status
        await _close_websocket(request, exc)
        return None
    if exc.status >= 500:
        log.warning("%s %s -> %s: %s", request.method, request.url.path, exc.code, exc.message)
    return error_response(exc.code, exc.message, exc.status)


async def _close_websocket(ws: WebSocket, exc: VirtfleetError) -> None:
    if ws.application_state is WebSocketState.CONNECTING:
        await ws.accept()
    await close_with(ws, 4000 + exc.status, exc.message)


async def _on_validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    err = InvalidInputError(validation_message(exc.errors()))
    return error_response(err.code, err.message, err.status)


async def _on_http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        message = f"no such endpoint: {request.method} {request.url.path}"
    else:
        message = str(exc.detail)
    return error_response(HTTP_CODES.get(exc.status_code, "http_error"), message, exc.status_code)


class InternalErrorMiddleware:
    """Turn any unexpected exception into the ``internal`` error shape; log the traceback."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_tracking(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, send_tracking)
        except Exception:
            log.exception("unexpected error in %s %s", scope.get("method"), scope.get("path"))
            if started:
                raise
            response = error_response("internal", "internal error; see the daemon log", 500)
            await response(scope, receive, send)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(VirtfleetError, cast(ExceptionHandler, _on_virtfleet))
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(HTTPException, _on_http)
    app.add_middleware(InternalErrorMiddleware)
