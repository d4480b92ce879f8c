"""ETags and If-Match: a change made on a stale view is refused with 412 and changes nothing."""

from __future__ import annotations

import asyncio
import re

import httpx
import pytest

from virtfleet.app.bootstrap import Platform

from .helpers import act, assert_error, create, snapshot, wait_op
from .platform import TestDriver

pytestmark = pytest.mark.usefixtures("image")
START = {"action": "start"}


async def etag(api: httpx.AsyncClient, name: str = "demo") -> str:
    r = await api.get(f"/1.0/instances/{name}")
    assert r.status_code == 200, r.text
    return r.headers["etag"]


async def test_get_returns_a_strong_etag_that_follows_changes(api: httpx.AsyncClient) -> None:
    """The ETag is stable while nothing is asked of the instance and moves when it is."""
    await create(api)
    first = await etag(api)
    assert re.fullmatch(r'"\d+-\d+"', first)
    assert await etag(api) == first
    await act(api, "demo", "start")
    assert await etag(api) != first


async def test_current_etag_lets_a_change_through(api: httpx.AsyncClient) -> None:
    """If-Match with the current ETag behaves as without the header."""
    await create(api)
    r = await api.put(
        "/1.0/instances/demo/state", json=START, headers={"If-Match": await etag(api)}
    )
    assert (await wait_op(api, r))["status"] == "success"


async def test_stale_etag_on_state_change_is_412_and_changes_nothing(
    api: httpx.AsyncClient, platform: Platform, driver: TestDriver
) -> None:
    """A change based on an outdated read is refused; no operation, no write, no driver call."""
    await create(api)
    stale = await etag(api)
    await act(api, "demo", "start")
    await act(api, "demo", "stop")
    before, calls = await snapshot(platform.store), list(driver.calls)
    r = await api.put("/1.0/instances/demo/state", json=START, headers={"If-Match": stale})
    assert_error(r, 412, "precondition_failed")
    assert await snapshot(platform.store) == before
    await asyncio.sleep(0.05)
    assert driver.calls == calls


async def test_stale_etag_on_delete_is_412(api: httpx.AsyncClient, platform: Platform) -> None:
    """DELETE with a stale ETag leaves the instance; with the current one it goes."""
    await create(api)
    stale = await etag(api)
    await act(api, "demo", "start")
    await act(api, "demo", "stop")
    before = await snapshot(platform.store)
    r = await api.delete("/1.0/instances/demo", headers={"If-Match": stale})
    assert_error(r, 412, "precondition_failed")
    assert await snapshot(platform.store) == before
    r = await api.delete("/1.0/instances/demo", headers={"If-Match": await etag(api)})
    assert (await wait_op(api, r))["status"] == "success"
    assert (await api.get("/1.0/instances/demo")).status_code == 404


async def test_two_changes_from_one_read_only_one_wins(api: httpx.AsyncClient) -> None:
    """Concurrent changes holding the same ETag: the compare-and-swap lets exactly one through.

    (Deletes, because a second delete passes the state guard: the 412 is the CAS's doing.)
    """
    await create(api)
    tag = await etag(api)
    replies = await asyncio.gather(
        *(api.delete("/1.0/instances/demo", headers={"If-Match": tag}) for _ in range(5))
    )
    assert sorted(r.status_code for r in replies) == [202, 412, 412, 412, 412]


@pytest.mark.parametrize("header", ["*", None])
async def test_star_or_no_header_is_unconditional(
    api: httpx.AsyncClient, header: str | None
) -> None:
    """``If-Match: *`` and no If-Match at all act as before ETags existed."""
    await create(api)
    await act(api, "demo", "start")  # the ETag moves on; neither request names one
    headers = {"If-Match": header} if header else {}
    r = await api.put("/1.0/instances/demo/state", json={"action": "stop"}, headers=headers)
    assert (await wait_op(api, r))["status"] == "success"
    r = await api.delete("/1.0/instances/demo", headers=headers)
    assert (await wait_op(api, r))["status"] == "success"


async def test_any_of_several_etags_matches(api: httpx.AsyncClient) -> None:
    """If-Match may list ETags; the current one anywhere in the list is enough."""
    await create(api)
    header = f'"1-1", W/"2-2", garbage, {await etag(api)}'
    r = await api.put("/1.0/instances/demo/state", json=START, headers={"If-Match": header})
    assert r.status_code == 202, r.text


@pytest.mark.parametrize("header", ['W/"{tag}"', "{tag}x", "", '"abc"'])
async def test_weak_or_malformed_etags_never_match(api: httpx.AsyncClient, header: str) -> None:
    """If-Match compares strongly: a weak or malformed tag is a failed precondition."""
    await create(api)
    tag = (await etag(api)).strip('"')
    value = header.format(tag=tag)
    r = await api.put("/1.0/instances/demo/state", json=START, headers={"If-Match": value})
    assert_error(r, 412, "precondition_failed")


async def test_delete_of_a_missing_instance_with_an_etag_is_412(api: httpx.AsyncClient) -> None:
    """Delete stays idempotent without If-Match or with ``*``; a named ETag needs the instance."""
    r = await api.delete("/1.0/instances/gone", headers={"If-Match": '"1-1"'})
    assert_error(r, 412, "precondition_failed")
    r = await api.delete("/1.0/instances/gone", headers={"If-Match": "*"})
    assert (await wait_op(api, r))["status"] == "success"


async def test_other_errors_come_before_the_precondition(api: httpx.AsyncClient) -> None:
    """RFC 9110 13.2.1: a request that fails anyway (404, 409) reports that, not 412."""
    r = await api.put("/1.0/instances/gone/state", json=START, headers={"If-Match": '"1-1"'})
    assert_error(r, 404, "not_found")
    await create(api)
    pause = {"action": "pause"}
    r = await api.put("/1.0/instances/demo/state", json=pause, headers={"If-Match": '"1-1"'})
    assert_error(r, 409, "invalid_state")
