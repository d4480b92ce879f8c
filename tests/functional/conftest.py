"""Fixtures: the whole app in-process over a MemoryStore, driven through its HTTP API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from virtfleet.api import create_app

from .platform import Platform, build_platform, running


@pytest.fixture
async def platform(tmp_path: Path) -> AsyncIterator[Platform]:
    (tmp_path / "console").mkdir()
    async with running(build_platform(tmp_path)) as p:
        yield p


@pytest.fixture
async def api(platform: Platform) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(platform.services))
    async with httpx.AsyncClient(transport=transport, base_url="http://virtfleet") as client:
        yield client


@pytest.fixture
async def image(api: httpx.AsyncClient) -> str:
    """A built image named ``tiny``."""
    r = await api.post("/1.0/images", json={"name": "tiny"})
    assert r.status_code == 202, r.text
    op = (await api.get(f"/1.0/operations/{r.json()['id']}/wait", params={"timeout_s": 10})).json()
    assert op["status"] == "success", op
    return "tiny"
