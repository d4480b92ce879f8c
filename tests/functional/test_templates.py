"""Templates and bulk clones through the API with the fake driver: all-or-nothing when a
start fails half-way, the template guard."""

from __future__ import annotations

import httpx

from tests.functional.platform import TestDriver
from virtfleet.app.bootstrap import Platform

from .helpers import assert_error, wait_op


async def _template(api: httpx.AsyncClient, image: str, name: str = "tpl") -> None:
    op = await wait_op(api, await api.post("/1.0/templates", json={"name": name, "image": image}))
    assert op["status"] == "success", op


async def test_bulk_clone_is_all_or_nothing(
    api: httpx.AsyncClient, image: str, driver: TestDriver, platform: Platform
) -> None:
    """One of three starts fails: the operation fails and no VM or disk of it is left."""
    await _template(api, image)
    driver.fail_next_start = "injected start failure"
    body = {"names": ["web-{1..3}"], "start": True}
    op = await wait_op(api, await api.post("/1.0/templates/tpl/instances", json=body))
    assert op["status"] == "failure", op
    assert (await api.get("/1.0/instances")).json() == []
    disks = platform.settings.disks_dir
    assert not any(disks.glob("web-*")), list(disks.iterdir())


async def test_clones_and_the_template_guard(
    api: httpx.AsyncClient, image: str, platform: Platform
) -> None:
    """count makes NAME-1..N linked clones; the template is then in use, naming them."""
    await _template(api, image)
    body = {"names": ["app"], "count": 2, "start": True}
    op = await wait_op(api, await api.post("/1.0/templates/tpl/instances", json=body))
    assert op["status"] == "success" and op["result"]["instances"] == ["app-1", "app-2"]
    running = [i["status"]["power"] for i in (await api.get("/1.0/instances")).json()]
    assert running == ["running", "running"]
    detail = assert_error(await api.delete("/1.0/templates/tpl"), 409, "in_use")
    assert "app-1" in detail and "app-2" in detail
    assert (platform.settings.disks_dir / "app-1" / "root.qcow2").is_file()
    assert_error(await api.post("/1.0/templates/tpl/instances", json={"names": ["app-1"]}),
                 409, "already_exists")  # fmt: skip
    assert_error(await api.get(f"/1.0/templates/{image}"), 400, "invalid_input")
