"""schemathesis over every operation of the OpenAPI document, against the in-process daemon.

The whole app (memory store, real agent, fake driver) runs on an event loop of
its own (an anyio portal); each generated case is sent to it through
httpx's ASGI transport as the local root user. Valid and invalid inputs alike
must never answer 5xx, and every error must come in the one error shape.
Bounded for time: ``MAX_EXAMPLES`` per operation, no shrinking, a fixed seed.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import HealthCheck, Phase, reject, settings

from virtfleet.api.auth import local_admin
from virtfleet.api.idempotency import MAX_KEY_CHARS
from virtfleet.api.openapi import openapi_document
from virtfleet.app.bootstrap import Platform

from .platform import make_platform

MAX_EXAMPLES = 15
_SERIAL = itertools.count()
SCHEMA = schemathesis.openapi.from_dict(openapi_document())
SCHEMA.config.generation.update(modes=["positive", "negative"], max_examples=MAX_EXAMPLES)
BASE_URL = "http://virtfleet"


class Daemon:
    """The platform on the portal's loop, with one client that stays on that loop."""

    def __init__(self, portal: BlockingPortal, platform: Platform) -> None:
        self.portal = portal
        self.platform = platform
        self.http: httpx.AsyncClient | None = None

    async def open(self) -> None:
        await self.platform.start()
        transport = httpx.ASGITransport(app=local_admin(self.platform.app))
        self.http = httpx.AsyncClient(transport=transport, base_url=BASE_URL, timeout=30)
        r = await self.http.post("/1.0/images", json={"name": "tiny"})  # so some names exist
        await self.http.get(f"/1.0/operations/{r.json()['id']}/wait", params={"timeout_s": 30})

    async def close(self) -> None:
        if self.http is not None:
            await self.http.aclose()
        await self.platform.stop()

    def send(self, kwargs: dict[str, Any]) -> httpx.Response:
        return self.portal.call(self._send, kwargs)

    async def _send(self, kwargs: dict[str, Any]) -> httpx.Response:
        assert self.http is not None
        return await self.http.request(
            kwargs["method"],
            kwargs["url"],
            headers=kwargs.get("headers"),
            params=kwargs.get("params"),
            content=_body(kwargs),
        )


def _body(kwargs: dict[str, Any]) -> bytes | None:
    if "json" in kwargs:  # possibly None: a JSON ``null`` body, not "no body"
        return json.dumps(kwargs["json"]).encode()
    data = kwargs.get("data")
    return data.encode() if isinstance(data, str) else data


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    tmp: Path = tmp_path_factory.mktemp("schemathesis")
    with start_blocking_portal() as portal:
        platform, _ = portal.call(_make, tmp)
        daemon = Daemon(portal, platform)
        portal.call(daemon.open)
        try:
            yield daemon
        finally:
            portal.call(daemon.close)


async def _make(tmp: Path) -> Any:
    return make_platform(tmp)  # on the portal's loop: the store binds to it


def assert_error_shape(response: httpx.Response) -> None:
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message", "status"}, body
    assert body["error"]["status"] == response.status_code, body
    assert isinstance(body["error"]["code"], str) and body["error"]["code"], body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"], body


def unique_key(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Make a valid Idempotency-Key unique to the case: generated keys repeat ("0", "00"...),
    and a reused key is refused (422) before the handler this test is after ever runs."""
    headers = kwargs.get("headers") or {}
    key = headers.get("Idempotency-Key")
    if isinstance(key, str) and key and key.isprintable() and key.isascii():
        suffix = f"-{next(_SERIAL)}"
        headers["Idempotency-Key"] = key[: MAX_KEY_CHARS - len(suffix)] + suffix
    return kwargs


@SCHEMA.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
def test_no_server_errors_and_one_error_shape(case: Any, daemon: Daemon) -> None:
    """Whatever schemathesis sends, the answer is < 500 and errors have the one shape."""
    kwargs = unique_key(case.as_transport_kwargs(base_url=BASE_URL))
    try:
        response = daemon.send(kwargs)
    except (httpx.LocalProtocolError, UnicodeEncodeError, httpx.InvalidURL):
        reject()  # not even sendable as HTTP: it cannot reach the server either
    assert response.status_code < 500, f"{case.as_curl_command()}\n-> {response.text}"
    if response.status_code >= 400:
        assert_error_shape(response)
