"""Hostile requests: oversized bodies (413), malformed bodies (400) and bad path parameters.

Every refusal comes in the one error shape and leaves the store as it was.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from virtfleet.api.limits import MAX_BODY_BYTES
from virtfleet.app.bootstrap import Platform
from virtfleet.client.paths import api_socket
from virtfleet.state.keys import IDEMPOTENCY

from .helpers import assert_error, create, snapshot, wait_op
from .platform import serve_uds

JSON = {"content-type": "application/json"}
BODY_ENDPOINTS = [
    pytest.param("POST", "/1.0/instances", id="create-instance"),
    pytest.param("PUT", "/1.0/instances/demo/state", id="change-state"),
    pytest.param("POST", "/1.0/images", id="build-image"),
]


def padded(size: int) -> bytes:
    """A valid create body of exactly ``size`` bytes (JSON padded with spaces)."""
    body = b'{"name": "big", "image": "tiny"}'
    return body + b" " * (size - len(body))


def segment(value: str) -> str:
    """``value`` as one URL path segment, dots encoded too (clients drop literal ``..``)."""
    return quote(value, safe="").replace(".", "%2E")


async def chunks(data: bytes, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


# -- body size ---------------------------------------------------------------------------


async def test_declared_oversize_body_is_413(api: httpx.AsyncClient, platform: Platform) -> None:
    """A Content-Length over 1 MiB is refused in the one error shape; nothing is written."""
    before = await snapshot(platform.store)
    r = await api.post("/1.0/instances", content=padded(MAX_BODY_BYTES + 1), headers=JSON)
    assert "1048576" in assert_error(r, 413, "payload_too_large")
    assert await snapshot(platform.store) == before


async def test_streamed_oversize_body_is_413(api: httpx.AsyncClient, platform: Platform) -> None:
    """Chunked bodies carry no Content-Length: the limit is enforced while reading."""
    before = await snapshot(platform.store)
    body = chunks(padded(MAX_BODY_BYTES + 1))
    r = await api.post("/1.0/instances", content=body, headers=JSON)
    assert "content-length" not in r.request.headers
    assert_error(r, 413, "payload_too_large")
    assert await snapshot(platform.store) == before


async def test_lying_content_length_is_413(api: httpx.AsyncClient) -> None:
    """A small declared length does not let a large body through."""
    headers = {**JSON, "content-length": "10"}
    r = await api.post("/1.0/instances", content=padded(2 * MAX_BODY_BYTES), headers=headers)
    assert_error(r, 413, "payload_too_large")


@pytest.mark.usefixtures("image")
async def test_body_of_exactly_the_limit_is_accepted(api: httpx.AsyncClient) -> None:
    """1 MiB itself is allowed."""
    r = await api.post("/1.0/instances", content=chunks(padded(MAX_BODY_BYTES)), headers=JSON)
    assert (await wait_op(api, r))["status"] == "success"


async def test_oversize_body_with_idempotency_key_records_nothing(
    api: httpx.AsyncClient, platform: Platform
) -> None:
    """The limit holds for bodies read for an idempotency key too; no record is left."""
    headers = {**JSON, "Idempotency-Key": "big"}
    r = await api.post(
        "/1.0/instances", content=chunks(padded(MAX_BODY_BYTES + 1)), headers=headers
    )
    assert_error(r, 413, "payload_too_large")
    assert await platform.store.list(IDEMPOTENCY) == []


def test_oversize_body_over_real_http_is_413(tmp_path: Path) -> None:
    """Through uvicorn on the daemon's socket, declared and chunked bodies alike."""

    async def scenario(data_dir: Path) -> None:
        transport = httpx.AsyncHTTPTransport(uds=str(api_socket(data_dir)))
        async with httpx.AsyncClient(transport=transport, base_url="http://virtfleet") as api:
            body = padded(MAX_BODY_BYTES + 1)
            r = await api.post("/1.0/instances", content=body, headers=JSON)
            assert_error(r, 413, "payload_too_large")
            r = await api.post("/1.0/instances", content=chunks(body), headers=JSON)
            assert_error(r, 413, "payload_too_large")
            assert (await api.get("/1.0/instances")).json() == []

    with serve_uds(tmp_path) as data_dir:
        asyncio.run(asyncio.wait_for(scenario(data_dir), 20))


# -- malformed bodies --------------------------------------------------------------------

BAD_BODIES: list[Any] = [
    pytest.param(b'{"action": "start",', "malformed JSON body", id="truncated-json"),
    pytest.param(b"\xff\xfe not utf-8", "malformed JSON body", id="not-utf8"),
    pytest.param(b"", "", id="empty"),
    pytest.param(b"[]", "", id="array"),
    pytest.param(b'"start"', "", id="string"),
    pytest.param(b"null", "", id="null"),
]


@pytest.mark.parametrize(("method", "path"), BODY_ENDPOINTS)
@pytest.mark.parametrize(("body", "says"), BAD_BODIES)
async def test_malformed_body_is_400(
    api: httpx.AsyncClient, platform: Platform, method: str, path: str, body: bytes, says: str
) -> None:
    """Bodies that are not a JSON object are 400 invalid_input on every body endpoint."""
    before = await snapshot(platform.store)
    r = await api.request(method, path, content=body, headers=JSON)
    assert assert_error(r, 400, "invalid_input").startswith(says)
    assert await snapshot(platform.store) == before


WRONG_TYPES = {
    "/1.0/instances": ({"name": "demo", "vcpus": "many"}, "vcpus"),
    "/1.0/instances/demo/state": ({"action": "start", "timeout_s": "soon"}, "timeout_s"),
    "/1.0/images": ({"name": "tiny", "force": {"deep": 1}}, "force"),
}
UNKNOWN = {
    "/1.0/instances": {"name": "demo", "cpus": 2},
    "/1.0/instances/demo/state": {"action": "start", "hard": True},
    "/1.0/images": {"name": "tiny", "url": "http://example.invalid/x.qcow2"},
}


@pytest.mark.parametrize(("method", "path"), BODY_ENDPOINTS)
async def test_wrong_type_is_400_naming_the_field(
    api: httpx.AsyncClient, platform: Platform, method: str, path: str
) -> None:
    before = await snapshot(platform.store)
    body, field = WRONG_TYPES[path]
    r = await api.request(method, path, json=body)
    assert assert_error(r, 400, "invalid_input").startswith(f"{field}:")
    assert await snapshot(platform.store) == before


@pytest.mark.parametrize(("method", "path"), BODY_ENDPOINTS)
async def test_unknown_field_is_400_naming_it(
    api: httpx.AsyncClient, platform: Platform, method: str, path: str
) -> None:
    before = await snapshot(platform.store)
    body = UNKNOWN[path]
    r = await api.request(method, path, json=body)
    extra = next(k for k in body if k not in ("name", "action"))
    assert assert_error(r, 400, "invalid_input") == f"unknown field {extra!r}"
    assert await snapshot(platform.store) == before


@pytest.mark.parametrize(("method", "path"), BODY_ENDPOINTS)
async def test_json_sent_as_text_plain_is_400(
    api: httpx.AsyncClient, method: str, path: str
) -> None:
    """Without a JSON content type the body is not taken as JSON."""
    r = await api.request(
        method, path, content=b'{"name": "demo"}', headers={"content-type": "text/plain"}
    )
    assert_error(r, 400, "invalid_input")


# -- path parameters ---------------------------------------------------------------------

TRAVERSAL = ["..", ".", "..\\..\\etc", "%2e%2e"]
CONTROL = ["de\x00mo", "de\nmo", "de\rmo", "de\x1bmo", "de\x7fmo", "de\tmo"]
SLASHED = ["../etc/passwd", "../../host", "a/../b"]
PATHS = [
    pytest.param("GET", "/1.0/instances/{}", "invalid_name", id="get-instance"),
    pytest.param("DELETE", "/1.0/instances/{}", "invalid_name", id="delete-instance"),
    pytest.param("PUT", "/1.0/instances/{}/state", "invalid_name", id="change-state"),
    pytest.param("GET", "/1.0/instances/{}/log", "invalid_name", id="instance-log"),
    pytest.param("GET", "/1.0/images/{}", "invalid_name", id="get-image"),
    pytest.param("DELETE", "/1.0/images/{}", "invalid_name", id="delete-image"),
    pytest.param("GET", "/1.0/operations/{}", "invalid_input", id="get-operation"),
    pytest.param("DELETE", "/1.0/operations/{}", "invalid_input", id="cancel-operation"),
    pytest.param("GET", "/1.0/operations/{}/wait", "invalid_input", id="wait-operation"),
]


@pytest.mark.parametrize(("method", "template", "code"), PATHS)
@pytest.mark.parametrize("value", TRAVERSAL + CONTROL)
async def test_bad_path_parameter_is_400(
    api: httpx.AsyncClient, platform: Platform, method: str, template: str, code: str, value: str
) -> None:
    """Traversal and control characters in any path parameter: 400 before any service runs."""
    before = await snapshot(platform.store)
    body = {"action": "start"} if template.endswith("/state") else None
    r = await api.request(method, template.format(segment(value)), json=body)
    assert_error(r, 400, code)
    assert await snapshot(platform.store) == before


@pytest.mark.parametrize(("method", "template", "code"), PATHS)
@pytest.mark.parametrize("value", SLASHED)
async def test_encoded_slashes_never_reach_a_handler(
    api: httpx.AsyncClient, platform: Platform, method: str, template: str, code: str, value: str
) -> None:
    """An encoded ``/`` splits the segment: no route matches (404/405), nothing is touched."""
    before = await snapshot(platform.store)
    r = await api.request(method, template.format(segment(value)))
    assert r.status_code in (400, 404, 405), r.text
    assert_error(r, r.status_code, r.json()["error"]["code"])
    assert await snapshot(platform.store) == before


@pytest.mark.usefixtures("image")
async def test_valid_names_still_work_after_the_guards(api: httpx.AsyncClient) -> None:
    """The checks refuse only what they should: ordinary names and ids pass."""
    op = await create(api, "web-01")
    assert (await api.get("/1.0/instances/web-01")).status_code == 200
    assert (await api.get(f"/1.0/operations/{op['id']}")).status_code == 200
    assert (await api.get("/1.0/images/tiny")).status_code == 200
