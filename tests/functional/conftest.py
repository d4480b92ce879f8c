"""Fixtures: the whole daemon in-process (real agent, fake driver, MemoryStore),
driven through its public HTTP API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from virtfleet.api.auth import local_admin
from virtfleet.app.bootstrap import Platform

from .accounts import Accounts
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
    """A client on the daemon's local socket: the local root user (admin, no password)."""
    transport = httpx.ASGITransport(app=local_admin(platform.app))  # local root, as the socket
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


@pytest.fixture
async def accounts(platform: Platform, api: httpx.AsyncClient) -> AsyncIterator[Accounts]:
    """Clients acting as an admin, operator or viewer (by token or session cookie)."""
    made = Accounts(platform, api)
    try:
        yield made
    finally:
        await made.aclose()


@pytest.fixture
def anon(accounts: Accounts) -> httpx.AsyncClient:
    """A client without credentials, not on the local socket."""
    return accounts.anonymous()
