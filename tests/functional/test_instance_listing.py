"""``GET /1.0/instances`` at scale: cached serialisation, field selection, pages, bad input."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from virtfleet.app.bootstrap import Platform
from virtfleet.model.auth import Role
from virtfleet.service.listing import Tokens
from virtfleet.state.keys import EVENTS, INSTANCES, OPERATIONS, instance_key

from .accounts import Accounts
from .helpers import act, assert_error, create

pytestmark = pytest.mark.usefixtures("image")
CONTINUE = "Virtfleet-Continue"


async def _list(api: httpx.AsyncClient, **params: Any) -> httpx.Response:
    r = await api.get("/1.0/instances", params=params)
    assert r.status_code == 200, r.text
    return r


async def test_list_is_every_view_as_get_one_shows_it(api: httpx.AsyncClient) -> None:
    """The listing (served from cached JSON) equals GET one of each, also after a change."""
    for name in ("b", "a", "c"):
        await create(api, name=name, start=True)  # observed by the agent: nothing else writes
    assert {i["status"]["power"] for i in (await _list(api)).json()} == {"running"}
    await act(api, "b", "stop")  # the cached view of "b" must not outlive its revision
    listed = (await _list(api)).json()
    assert [i["name"] for i in listed] == ["a", "b", "c"]
    for item in listed:
        assert item == (await api.get(f"/1.0/instances/{item['name']}")).json()
    assert listed[1]["status"]["power"] == "stopped"


async def test_fields_select_top_level_keys(api: httpx.AsyncClient) -> None:
    """``fields=name,status`` answers only those keys, with the values a full listing has."""
    await create(api, name="a")
    await act(api, "a", "start")  # the agent has observed it: its status stays as it is
    full = (await _list(api)).json()
    picked = (await _list(api, fields="name,status")).json()
    assert picked == [{"name": "a", "status": full[0]["status"]}]
    assert list((await _list(api, fields="mode,name")).json()[0]) == ["mode", "name"]


@pytest.mark.parametrize("fields", ["name,colour", "", "name,,status", "spec.vcpus"])
async def test_unknown_field_is_refused(api: httpx.AsyncClient, fields: str) -> None:
    """A field an instance does not have is 400 ``unknown_field``, naming the choices."""
    await create(api, name="a")
    r = await api.get("/1.0/instances", params={"fields": fields})
    assert "choose from name, spec" in assert_error(r, 400, "unknown_field")


async def test_pages_follow_continue_tokens_to_the_end(api: httpx.AsyncClient) -> None:
    """``limit`` pages through every instance in name order; the last page has no token."""
    names = [f"vm{i}" for i in range(5)]
    for name in names:
        await create(api, name=name)
    seen, token, pages = [], None, 0
    while True:
        params = {"limit": 2, "fields": "name", **({"continue": token} if token else {})}
        r = await _list(api, **params)
        seen += [i["name"] for i in r.json()]
        pages += 1
        token = r.headers.get(CONTINUE)
        if token is None:
            break
    assert (seen, pages) == (names, 3)
    exact = await _list(api, limit=5)
    assert len(exact.json()) == 5 and CONTINUE not in exact.headers


async def test_changed_or_foreign_continue_token_is_refused(api: httpx.AsyncClient) -> None:
    """A token edited, cut short, or made by another daemon is 400 ``invalid_continue``."""
    for name in ("a", "b", "c"):
        await create(api, name=name)
    token = (await _list(api, limit=1)).headers[CONTINUE]
    payload, signature = token.split(".")
    flipped = payload[:-1] + ("A" if payload[-1] != "A" else "B")
    foreign = Tokens().make("a")  # well formed, signed with another daemon's key
    for bad in (f"{flipped}.{signature}", payload, token[:-2], foreign, "x.y", "é.ü", "nope"):
        r = await api.get("/1.0/instances", params={"continue": bad})
        assert_error(r, 400, "invalid_continue")
    assert (await _list(api, **{"continue": token})).json()[0]["name"] == "b"


@pytest.mark.parametrize("limit", ["0", "-1", "1001", "many"])
async def test_bad_limit_is_refused(api: httpx.AsyncClient, limit: str) -> None:
    r = await api.get("/1.0/instances", params={"limit": limit})
    assert_error(r, 400, "invalid_input")


async def test_viewer_listing_after_an_operator_one_is_masked(
    accounts: Accounts, api: httpx.AsyncClient
) -> None:
    """The cache keeps masked and unmasked views apart: whoever reads first."""
    await create(api, name="web", cloud_init={"user_data": "#cloud-config\npassword: s3cret\n"})
    operator = await accounts.token(Role.OPERATOR)
    assert "s3cret" in (await _list(operator)).text
    viewer = await accounts.token(Role.VIEWER)
    shown = (await _list(viewer, fields="spec")).json()[0]["spec"]["cloud_init"]
    assert shown["user_data"] == "***"
    assert "s3cret" in (await _list(operator, fields="spec")).text


async def test_create_without_start_is_one_commit(
    api: httpx.AsyncClient, platform: Platform
) -> None:
    """Spec, desired, status, its event and its finished operation share one revision."""
    op = await create(api, name="a")
    store = platform.store
    spec = await store.get(instance_key("a", "spec"))
    record = await store.get(OPERATIONS + op["id"])
    assert spec is not None and record is not None
    assert record.mod_revision == spec.mod_revision
    events = [kv for kv in await store.list(EVENTS) if b'"instance.created"' in kv.value]
    assert [kv.mod_revision for kv in events] == [spec.mod_revision]
    assert op["result"] == {"name": "a", "power": "stopped"}


async def test_creates_and_listings_read_no_listing_of_every_instance(
    api: httpx.AsyncClient, platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A create with a NIC (its MAC checked against every other) and a listing work from
    the store-following tally: nothing lists the instances (O(1) in the instance count)."""
    await create(api, name="a", nics=[{"mode": "user"}])
    listed: list[str] = []
    original = platform.store.list

    async def list_(prefix: str, **kwargs: Any) -> Any:
        listed.append(prefix)
        return await original(prefix, **kwargs)

    monkeypatch.setattr(platform.store, "list", list_)
    await create(api, name="b", nics=[{"mode": "user"}], start=True)
    names = [i["name"] for i in (await _list(api, fields="name")).json()]
    assert names == ["a", "b"]
    assert INSTANCES not in listed, listed
    macs = [(await api.get(f"/1.0/instances/{n}")).json()["spec"]["nics"][0]["mac"] for n in names]
    assert macs[0] != macs[1] and all(macs)
