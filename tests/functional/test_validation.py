"""Bad input never reaches the store: one error shape, 400, nothing written."""

from __future__ import annotations

from urllib.parse import quote

import httpx
import pytest

from virtfleet.app.bootstrap import Platform

from .helpers import assert_error, create

BAD_NAMES = [
    pytest.param("", id="empty"),
    pytest.param("a" * 64, id="too-long"),
    pytest.param("..", id="dot-dot"),
    pytest.param("a/b", id="slash"),
    pytest.param("d\u0435mo", id="cyrillic-homoglyph"),
    pytest.param("de\x00mo", id="nul"),
    pytest.param("de\nmo", id="newline"),
    pytest.param("de\x1bmo", id="escape"),
    pytest.param("Demo", id="upper-case"),
    pytest.param("-demo", id="leading-dash"),
]
# Names that survive as one URL path segment (".." and "/" never reach a route).
BAD_PATH_NAMES = ["d\u0435mo", "de\x00mo", "de\nmo", "a" * 64, "Demo", "-demo", "de mo"]


@pytest.mark.parametrize("name", BAD_NAMES)
async def test_bad_instance_name_in_body_is_400(
    api: httpx.AsyncClient, platform: Platform, name: str
) -> None:
    """A bad name in a create body is 400 invalid_name and writes nothing."""
    rev = await platform.store.revision()
    r = await api.post("/1.0/instances", json={"name": name, "image": "tiny"})
    assert_error(r, 400, "invalid_name")
    assert await platform.store.revision() == rev


@pytest.mark.parametrize("name", BAD_NAMES)
async def test_bad_image_name_in_build_body_is_400(
    api: httpx.AsyncClient, platform: Platform, name: str
) -> None:
    """A bad image name is refused before any operation is submitted."""
    rev = await platform.store.revision()
    assert_error(await api.post("/1.0/images", json={"name": name}), 400, "invalid_name")
    assert await platform.store.revision() == rev


@pytest.mark.parametrize("name", BAD_PATH_NAMES)
@pytest.mark.parametrize(
    ("method", "suffix", "body"),
    [
        ("GET", "", None),
        ("DELETE", "", None),
        ("PUT", "/state", {"action": "start"}),
        ("GET", "/log", None),
    ],
)
async def test_bad_name_in_path_is_400(
    api: httpx.AsyncClient,
    platform: Platform,
    name: str,
    method: str,
    suffix: str,
    body: dict[str, str] | None,
) -> None:
    """Instance names in paths are validated before any service runs."""
    rev = await platform.store.revision()
    url = f"/1.0/instances/{quote(name, safe='')}{suffix}"
    assert_error(await api.request(method, url, json=body), 400, "invalid_name")
    assert await platform.store.revision() == rev


async def test_bad_image_name_in_path_is_400(api: httpx.AsyncClient) -> None:
    """Image names in paths are validated too."""
    homoglyph = quote("t\u0456ny")  # Cyrillic i
    assert_error(await api.get(f"/1.0/images/{homoglyph}"), 400, "invalid_name")
    assert_error(await api.delete("/1.0/images/TINY"), 400, "invalid_name")


async def test_unknown_field_is_400(api: httpx.AsyncClient, platform: Platform) -> None:
    """Unknown fields are rejected, naming the field, not silently dropped."""
    rev = await platform.store.revision()
    r = await api.post("/1.0/instances", json={"name": "demo", "image": "tiny", "cpus": 2})
    assert assert_error(r, 400, "invalid_input") == "unknown field 'cpus'"
    r = await api.put("/1.0/instances/demo/state", json={"action": "start", "hard": True})
    assert "hard" in assert_error(r, 400, "invalid_input")
    assert await platform.store.revision() == rev


async def test_malformed_json_is_400(api: httpx.AsyncClient) -> None:
    """A body that is not JSON is 400 invalid_input saying so."""
    r = await api.post(
        "/1.0/instances", content=b'{"name": "demo",', headers={"content-type": "application/json"}
    )
    assert assert_error(r, 400, "invalid_input").startswith("malformed JSON body")


async def test_wrong_type_names_the_field(api: httpx.AsyncClient) -> None:
    """A value of the wrong type or range is 400 with the field named in one line."""
    r = await api.post("/1.0/instances", json={"name": "demo", "vcpus": "many"})
    assert assert_error(r, 400, "invalid_input").startswith("vcpus:")
    r = await api.post("/1.0/instances", json={"name": "demo", "memory_mib": 1})
    assert "memory_mib" in assert_error(r, 400, "invalid_input")
    r = await api.put("/1.0/instances/demo/state", json={"action": "explode"})
    assert assert_error(r, 400, "invalid_input").startswith("action:")


async def test_missing_field_and_bad_query(api: httpx.AsyncClient) -> None:
    """Missing required fields and bad query parameters use the same shape."""
    assert "name" in assert_error(await api.post("/1.0/instances", json={}), 400, "invalid_input")
    r = await api.get("/1.0/operations/x/wait", params={"timeout_s": "soon"})
    assert "timeout_s" in assert_error(r, 400, "invalid_input")


async def test_unknown_route_is_404_in_the_same_shape(api: httpx.AsyncClient) -> None:
    """Unknown endpoints and methods answer in the one error shape."""
    assert "/1.0/nothing" in assert_error(await api.get("/1.0/nothing"), 404, "not_found")
    assert_error(await api.post("/1.0/host"), 405, "method_not_allowed")


async def test_unexpected_error_is_500_without_details(
    api: httpx.AsyncClient, platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug becomes ``internal`` 500 with a generic message (the traceback goes to the log)."""

    async def broken(*args: object) -> None:
        raise RuntimeError("secret detail")

    monkeypatch.setattr(platform.services.instances, "list_json", broken)
    message = assert_error(await api.get("/1.0/instances"), 500, "internal")
    assert "secret" not in message


@pytest.mark.usefixtures("image")
async def test_invalid_spec_combination_is_400(api: httpx.AsyncClient) -> None:
    """Cross-field rules of the spec (max_vcpus >= vcpus) are input errors too."""
    r = await api.post("/1.0/instances", json={"name": "demo", "vcpus": 2, "max_vcpus": 1})
    assert "max_vcpus" in assert_error(r, 400, "invalid_input")
    await create(api)
