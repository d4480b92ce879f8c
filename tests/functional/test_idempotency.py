"""Idempotency keys end to end: a retried change is answered once and done once."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from virtfleet.app.bootstrap import Platform
from virtfleet.model.operation import Operation
from virtfleet.state.keys import IDEMPOTENCY

from .helpers import assert_error, create, snapshot, wait_op
from .platform import TestDriver

pytestmark = pytest.mark.usefixtures("image")
BODY = {"name": "demo", "image": "tiny"}


def key(value: str) -> dict[str, str]:
    return {"Idempotency-Key": value}


async def test_retried_create_returns_the_first_response_and_creates_once(
    api: httpx.AsyncClient, platform: Platform
) -> None:
    """Same key, same request: the first status and body again, one instance, one operation."""
    first = await api.post("/1.0/instances", json=BODY, headers=key("k-1"))
    ops_before = len((await api.get("/1.0/operations")).json())
    again = await api.post("/1.0/instances", json=BODY, headers=key("k-1"))
    assert (first.status_code, again.status_code) == (202, 202)
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert len((await api.get("/1.0/operations")).json()) == ops_before
    assert [i["name"] for i in (await api.get("/1.0/instances")).json()] == ["demo"]
    created = [e for e in (await api.get("/1.0/events")).json() if e["kind"] == "instance.created"]
    assert len(created) == 1


async def test_equal_json_bodies_count_as_the_same_request(api: httpx.AsyncClient) -> None:
    """Key order and whitespace in the JSON body do not make a retry a different request."""
    first = await api.post("/1.0/instances", json=BODY, headers=key("k-json"))
    raw = b'{ "image" : "tiny",\n "name": "demo" }'
    headers = {**key("k-json"), "content-type": "application/json"}
    again = await api.post("/1.0/instances", content=raw, headers=headers)
    assert again.status_code == 202 and again.json() == first.json()


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/1.0/instances", {"name": "other", "image": "tiny"}),
        ("POST", "/1.0/images", {"name": "tiny"}),
        ("DELETE", "/1.0/instances/demo", None),
    ],
    ids=["other-body", "other-path", "other-method"],
)
async def test_key_reused_for_another_request_is_422(
    api: httpx.AsyncClient, platform: Platform, method: str, path: str, body: Any
) -> None:
    """A key sent again with another body, path or method is refused; nothing is done."""
    await wait_op(api, await api.post("/1.0/instances", json=BODY, headers=key("k-2")))
    before = await snapshot(platform.store)
    r = await api.request(method, path, json=body, headers=key("k-2"))
    assert_error(r, 422, "idempotency_key_reused")
    assert await snapshot(platform.store) == before


async def test_retry_while_the_first_is_running_is_409(
    api: httpx.AsyncClient, platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A retry during the first request answers 409 at once (with Retry-After), not twice."""
    gate, entered = asyncio.Event(), asyncio.Event()
    create_instance = platform.services.instances.create

    async def slow_create(*args: Any, **kwargs: Any) -> Operation:
        entered.set()
        await gate.wait()
        return await create_instance(*args, **kwargs)

    monkeypatch.setattr(platform.services.instances, "create", slow_create)
    first = asyncio.create_task(api.post("/1.0/instances", json=BODY, headers=key("k-3")))
    await asyncio.wait_for(entered.wait(), 5)
    busy = await api.post("/1.0/instances", json=BODY, headers=key("k-3"))
    assert_error(busy, 409, "idempotency_in_progress")
    assert busy.headers["retry-after"] == "1"
    gate.set()
    done = await first
    again = await api.post("/1.0/instances", json=BODY, headers=key("k-3"))
    assert (done.status_code, again.json()) == (202, done.json())


async def test_a_server_error_frees_the_key(
    api: httpx.AsyncClient, platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 5xx is not remembered: the retry runs the request for real."""

    async def broken(*args: Any, **kwargs: Any) -> Operation:
        raise RuntimeError("boom")

    monkeypatch.setattr(platform.services.instances, "create", broken)
    assert_error(await api.post("/1.0/instances", json=BODY, headers=key("k-4")), 500, "internal")
    monkeypatch.undo()
    r = await api.post("/1.0/instances", json=BODY, headers=key("k-4"))
    assert r.status_code == 202 and "idempotent-replayed" not in r.headers


async def test_an_error_answer_is_replayed_too(api: httpx.AsyncClient, platform: Platform) -> None:
    """A 4xx about the request itself (here 409 already_exists) is the answer to the key."""
    await create(api)
    first = await api.post("/1.0/instances", json=BODY, headers=key("k-5"))
    assert_error(first, 409, "already_exists")
    again = await api.post("/1.0/instances", json=BODY, headers=key("k-5"))
    assert_error(again, 409, "already_exists")
    assert again.headers["idempotent-replayed"] == "true"


async def test_retried_state_change_acts_once(api: httpx.AsyncClient, driver: TestDriver) -> None:
    """PUT takes keys too: a retried start is one operation and one driver start."""
    await create(api)
    body = {"action": "start"}
    first = await api.put("/1.0/instances/demo/state", json=body, headers=key("k-6"))
    again = await api.put("/1.0/instances/demo/state", json=body, headers=key("k-6"))
    assert again.json()["id"] == first.json()["id"]
    assert (await wait_op(api, first))["status"] == "success"
    assert [c for c in driver.calls if c == ("start", "demo")] == [("start", "demo")]


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("k" * 256, id="too-long"),
        pytest.param("", id="empty"),
        pytest.param("a\x01b", id="control-char"),
        pytest.param("a\tb", id="tab"),
        pytest.param("a\x7fb", id="del"),
        pytest.param("ключ", id="non-ascii"),
    ],
)
async def test_bad_key_is_400(api: httpx.AsyncClient, platform: Platform, value: str) -> None:
    """Keys over 255 characters, empty or with control characters are refused before acting."""
    before = await snapshot(platform.store)
    headers = [(b"idempotency-key", value.encode())]
    r = await api.post("/1.0/instances", json=BODY, headers=headers)
    assert "Idempotency-Key" in assert_error(r, 400, "invalid_input")
    assert await snapshot(platform.store) == before


async def test_longest_key_is_fine(api: httpx.AsyncClient) -> None:
    """255 printable characters (spaces included) are a valid key."""
    r = await api.post("/1.0/instances", json=BODY, headers=key("k " * 127 + "k"))
    assert r.status_code == 202


async def test_two_keys_headers_are_400(api: httpx.AsyncClient) -> None:
    """One key per request: two Idempotency-Key headers are ambiguous."""
    headers = [(b"idempotency-key", b"a"), (b"idempotency-key", b"b")]
    assert_error(await api.post("/1.0/instances", json=BODY, headers=headers), 400, "invalid_input")


async def test_records_live_under_their_prefix_on_a_24h_lease(
    api: httpx.AsyncClient, platform: Platform
) -> None:
    """Each key is one record under /idempotency/, attached to a lease of 24 h."""
    await api.post("/1.0/instances", json=BODY, headers=key("k-7"))
    records = await platform.store.list(IDEMPOTENCY)
    assert len(records) == 1 and records[0].lease is not None
    leases = platform.store._leases  # type: ignore[attr-defined]
    assert leases[records[0].lease].ttl == 24 * 3600


async def test_safe_methods_ignore_the_header(api: httpx.AsyncClient, platform: Platform) -> None:
    """GET is idempotent by itself: the header is neither checked nor recorded."""
    r = await api.get("/1.0/instances", headers=key("x" * 300))
    assert r.status_code == 200
    assert await platform.store.list(IDEMPOTENCY) == []
