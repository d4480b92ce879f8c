"""Images through the API: build as an operation, show, rebuild, delete guarded by users."""

from __future__ import annotations

import httpx

from .helpers import assert_error, create, wait_op


async def test_build_records_the_image(api: httpx.AsyncClient, image: str) -> None:
    """A built image is listed with its format, sizes (from qemu-img) and sha256."""
    [record] = (await api.get("/1.0/images")).json()
    assert (record["name"], record["format"], record["builder"]) == (image, "qcow2", "tiny")
    assert record["virtual_size_bytes"] == 16 * 1024 * 1024
    assert len(record["sha256"]) == 64
    assert (await api.get(f"/1.0/images/{image}")).json() == record


async def test_build_reports_progress(api: httpx.AsyncClient, image: str) -> None:
    """The builder's progress reports become operation.progress events."""
    events = (await api.get("/1.0/events")).json()
    assert any(e["kind"] == "operation.progress" and e["target"] == "image/tiny" for e in events)
    assert any(e["kind"] == "image.built" for e in events)


async def test_building_an_existing_image_needs_force(api: httpx.AsyncClient, image: str) -> None:
    """Rebuilding is 409 already_exists unless force is given."""
    assert_error(await api.post("/1.0/images", json={"name": image}), 409, "already_exists")
    op = await wait_op(api, await api.post("/1.0/images", json={"name": image, "force": True}))
    assert op["status"] == "success"


async def test_unknown_builder_lists_the_known_ones(api: httpx.AsyncClient) -> None:
    """An unknown builder is 400 invalid_input naming the builders there are."""
    r = await api.post("/1.0/images", json={"name": "x", "builder": "fedora"})
    assert "tiny" in assert_error(r, 400, "invalid_input")


async def test_missing_image_is_404(api: httpx.AsyncClient) -> None:
    """Showing a missing image is 404 not_found."""
    assert_error(await api.get("/1.0/images/nope"), 404, "not_found")


async def test_delete_refuses_an_image_in_use(api: httpx.AsyncClient, image: str) -> None:
    """An image an instance uses cannot be deleted (409 in_use naming the instance)."""
    await create(api, "web")
    assert "web" in assert_error(await api.delete(f"/1.0/images/{image}"), 409, "in_use")
    await wait_op(api, await api.delete("/1.0/instances/web"))
    assert (await api.delete(f"/1.0/images/{image}")).json() == {
        "name": image,
        "deleted": True,
        "kept_on": [],
    }
    assert (await api.delete(f"/1.0/images/{image}")).json() == {
        "name": image,
        "deleted": False,
        "kept_on": [],
    }
    assert (await api.get("/1.0/images")).json() == []
