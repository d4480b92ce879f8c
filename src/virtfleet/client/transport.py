"""How a ``Client`` sends a request: the ``Transport`` protocol, its ``Answer``, and the
httpx transport (TCP, TLS with a pinned certificate, or any ``httpx.Client`` a test
passes, FastAPI's TestClient included).

The daemon's own Unix socket has a transport of its own (local.py) that needs none of
httpx. Owns the shape of one exchange; must not know endpoints or the error shape.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import httpx


@dataclass(frozen=True)
class Answer:
    """A response read whole."""

    status: int
    headers: list[tuple[str, str]]
    content: bytes

    def json(self) -> Any:
        return json.loads(self.content)


class Transport(Protocol):
    """Sends one request and reads its answer whole; keeps the session's cookies."""

    # What a failure to talk at all looks like (the client answers daemon_unavailable).
    failures: tuple[type[BaseException], ...]

    @property
    def cookies(self) -> Mapping[str, str]: ...

    def send(
        self,
        method: str,
        path: str,
        params: Mapping[str, Any],
        body: Any,
        headers: Mapping[str, str],
        timeout_s: float,
    ) -> Answer:
        """One call (``body``: JSON, or None); its answer, whatever its status."""
        ...

    def close(self) -> None: ...


class HttpxTransport:
    """A ``Transport`` over an ``httpx.Client`` (its base URL, TLS context and cookie jar)."""

    def __init__(self, http: httpx.Client) -> None:
        import httpx

        self.http = http
        self.failures: tuple[type[BaseException], ...] = (httpx.TransportError,)

    @property
    def cookies(self) -> Mapping[str, str]:
        return self.http.cookies

    def send(
        self,
        method: str,
        path: str,
        params: Mapping[str, Any],
        body: Any,
        headers: Mapping[str, str],
        timeout_s: float,
    ) -> Answer:
        response = self.http.request(
            method, path, params=params, json=body, timeout=timeout_s, headers=dict(headers)
        )
        return Answer(response.status_code, response.headers.multi_items(), response.content)

    def close(self) -> None:
        self.http.close()
