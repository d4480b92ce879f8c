"""Small helpers for driving the API in tests: wait for an operation, assert the error shape."""

from __future__ import annotations

from typing import Any

import httpx

from virtfleet.state.store import StateStore


async def wait_op(api: httpx.AsyncClient, op: dict[str, Any] | httpx.Response) -> dict[str, Any]:
    """The operation once done (fails the test if it is not done within 10 s)."""
    if isinstance(op, httpx.Response):
        assert op.status_code == 202, op.text
        op = dict(op.json())
    r = await api.get(f"/1.0/operations/{op['id']}/wait", params={"timeout_s": 10})
    done = r.json()
    assert done["status"] in ("success", "failure", "cancelled"), done
    return dict(done)


def assert_error(r: httpx.Response, status: int, code: str) -> str:
    """Assert ``r`` carries exactly the one error shape with ``status``/``code``; its message."""
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "status"}
    assert body["error"]["code"] == code, body
    assert body["error"]["status"] == status
    message = body["error"]["message"]
    assert message and "\n" not in message
    return str(message)


async def create(
    api: httpx.AsyncClient, name: str = "demo", start: bool = False, **spec: Any
) -> dict[str, Any]:
    """Create an instance from the ``tiny`` image and wait for the operation to succeed."""
    body = {"name": name, "image": "tiny", "start": start, **spec}
    op = await wait_op(api, await api.post("/1.0/instances", json=body))
    assert op["status"] == "success", op
    return op


async def act(api: httpx.AsyncClient, name: str, action: str, **body: Any) -> dict[str, Any]:
    """PUT a state change and wait for its operation."""
    r = await api.put(f"/1.0/instances/{name}/state", json={"action": action, **body})
    return await wait_op(api, r)


async def snapshot(store: StateStore) -> list[tuple[str, int]]:
    """Every key and its mod revision outside the audit log: equal snapshots, nothing done."""
    return [
        (kv.key, kv.mod_revision)
        for kv in await store.list("/")
        if not kv.key.split("/")[1].startswith("audit")  # /audit/ and /audit-anonymous/
    ]
