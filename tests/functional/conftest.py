"""Fixtures: the whole daemon in-process (real agent, fake driver, MemoryStore),
driven through its public HTTP API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from virtfleet.app.bootstrap import Platform

from .platform import TestDriver, make_platform, running


@pytest.fixture
async def platform_and_driver(tmp_path: Path) -> AsyncIterator[tuple[Platform, TestDriver]]:
    platform, driver = make_platform(tmp_path)
    async with running(platform):
        yield platform, driver


@pytest.fixture
def platform(platform_and_driver: tuple[Platform, TestDriver]) -> Platform:
    return platform_and_driver[0]


@pytest.fixture
def driver(platform_and_driver: tuple[Platform, TestDriver]) -> TestDriver:
    return platform_and_driver[1]


@pytest.fixture
async def api(platform: Platform) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=platform.app)
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
