"""Errors the client raises: ``ApiError`` built from the API's one error shape.

Owns turning responses and transport failures (``transport_error``: a pinned
certificate that changed is ``certificate_mismatch``) into ``ApiError``. Must not
import the server's error classes: the wire ``code`` is the contract.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

INVALID_INPUT_CODES = frozenset({"invalid_input", "invalid_name", "invalid_store_url"})


class ApiError(Exception):
    """An error answered by the API (or met on the way): ``code``, ``message``, HTTP ``status``."""

    def __init__(self, code: str, message: str, status: int) -> None:
        super().__init__(f"{message} [{code}]")
        self.code = code
        self.message = message
        self.status = status

    @property
    def invalid_input(self) -> bool:
        return self.code in INVALID_INPUT_CODES

    def to_dict(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "status": self.status}}


class DaemonUnavailableError(ApiError):
    """The daemon could not be reached at all (not running, wrong socket, ...)."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(
            "daemon_unavailable",
            f"cannot reach the virtfleet daemon at {where} ({reason}); "
            "is it running? start it with `virtfleet serve`",
            503,
        )


class CertificateMismatchError(ApiError):
    """The server's TLS certificate is not the one pinned for it (it changed, or a
    machine in between answered): nothing was sent, not even the token."""

    def __init__(self, where: str, pinned: str, seen: str | None) -> None:
        super().__init__(
            "certificate_mismatch",
            f"the TLS certificate of {where} does not match the pinned fingerprint "
            f"(pinned {pinned}, presented {seen or 'none'}); if the server's certificate was "
            "replaced on purpose, `virtfleet remote remove` and `remote add` it again",
            495,  # nginx's "SSL Certificate Error"
        )


class _Response(Protocol):
    @property
    def status_code(self) -> int: ...
    @property
    def content(self) -> bytes: ...


def transport_error(where: str, err: BaseException) -> ApiError:
    """The ``ApiError`` for a failure to talk to ``where`` at all (a pin mismatch or not)."""
    from virtfleet.client.tls import find_mismatch  # ssl: only once something failed

    mismatch = find_mismatch(err)
    if mismatch is not None:
        return CertificateMismatchError(where, mismatch.pinned, mismatch.seen)
    return DaemonUnavailableError(where, str(err) or type(err).__name__)


def error_from_response(response: _Response) -> ApiError:
    """The ``ApiError`` a non-2xx response carries (its error shape, else its status line)."""
    return error_from_answer(response.status_code, response.content)


def error_from_answer(status: int, content: bytes) -> ApiError:
    """The ``ApiError`` of an answer with HTTP ``status`` and body ``content``."""
    try:
        err = json.loads(content)["error"]
        return ApiError(str(err["code"]), str(err["message"]), int(err["status"]))
    except (ValueError, KeyError, TypeError):
        text = " ".join(content.decode(errors="replace").split())[:200]
        return ApiError("http_error", f"HTTP {status}: {text}", status)
