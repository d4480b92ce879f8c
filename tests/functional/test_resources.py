"""PATCH /1.0/instances/{name} and /1.0/host/capacity through the public API (fake driver).

The real agent applies each change through the driver's live-resources
capability; the fake driver keeps what a hypervisor would report. Real guests
see the effects in tests/integration/test_live_resources.py.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from virtfleet.app.bootstrap import Platform

from .helpers import act, assert_error, create, snapshot, wait_op
from .platform import TestDriver

pytestmark = pytest.mark.usefixtures("image")
BIG = {"vcpus": 1, "max_vcpus": 4, "memory_mib": 512, "max_memory_mib": 1024}


async def patch(api: httpx.AsyncClient, body: dict[str, Any], **kw: Any) -> httpx.Response:
    return await api.patch("/1.0/instances/demo", json=body, **kw)


async def resize(api: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    op = await wait_op(api, await patch(api, body))
    assert op["status"] == "success", op
    return dict(op["result"])


def modes(result: dict[str, Any]) -> dict[str, str]:
    return {c["target"]: c["mode"] for c in result["changes"]}


async def show(api: httpx.AsyncClient) -> dict[str, Any]:
    return dict((await api.get("/1.0/instances/demo")).json())


async def test_running_vm_changes_live(api: httpx.AsyncClient, driver: TestDriver) -> None:
    """Memory and vCPUs of a running VM change live; applied follows, nothing is pending."""
    await create(api, start=True, **BIG)
    result = await resize(api, {"memory_mib": 768, "vcpus": 3, "cpu_limit_pct": 50})
    assert modes(result) == {"memory_mib": "live", "vcpus": "live", "cpu_limit_pct": "live"}
    assert result["pending"] == []
    inst = await show(api)
    assert inst["status"]["applied"]["memory_mib"] == 768
    assert inst["status"]["applied"]["vcpus"] == 3
    assert inst["pending"] == []
    state = driver.live_state("demo")
    assert (state.memory_mib, state.vcpus) == (768, 3)
    live = (await api.get("/1.0/instances/demo/resources")).json()
    assert live["live"]["balloon_actual_mib"] == 768


async def test_started_vm_gets_its_balloon_target(
    api: httpx.AsyncClient, driver: TestDriver
) -> None:
    """A VM booted with max memory is ballooned down to its memory at start."""
    await create(api, start=True, **BIG)
    assert driver.live_state("demo").memory_mib == 512
    assert (await show(api))["status"]["applied"]["memory_mib"] == 512


async def test_stopped_vm_changes_at_next_boot(api: httpx.AsyncClient) -> None:
    """A stopped VM's changes are stored and marked next-boot; the spec says what it will get."""
    await create(api, **BIG)
    result = await resize(api, {"memory_mib": 1024, "max_vcpus": 8})
    assert set(modes(result).values()) == {"next-boot"}
    spec = (await show(api))["spec"]
    assert (spec["memory_mib"], spec["max_vcpus"], spec["max_memory_mib"]) == (1024, 8, 1024)


async def test_max_memory_waits_for_a_reboot(api: httpx.AsyncClient) -> None:
    """Raising the boot RAM of a running VM is pending until it restarts, then applied."""
    await create(api, start=True, **BIG)
    result = await resize(api, {"max_memory_mib": 2048})
    assert modes(result) == {"max_memory_mib": "next-boot"}
    assert [c["target"] for c in (await show(api))["pending"]] == ["max_memory_mib"]
    await act(api, "demo", "restart")
    inst = await show(api)
    assert inst["pending"] == [] and inst["status"]["applied"]["max_memory_mib"] == 2048


async def test_disks_and_nics_hot_plug(
    api: httpx.AsyncClient, driver: TestDriver, platform: Platform
) -> None:
    """A disk and a NIC are added, the disk grown and throttled, then both removed again."""
    await create(api, start=True, nics=[], **BIG)  # no default NIC: nic0 is the hot-added one
    await resize(api, {"disks_add": [{"name": "data", "size_gib": 0.0625}], "nics_add": [{}]})
    state = driver.live_state("demo")
    assert "data" in state.disks and state.nics == ["nic0"]
    assert (platform.settings.disks_dir / "demo" / "data.qcow2").exists()
    limits = {"iops_write": 100, "bps_read": 1048576}
    result = await resize(api, {"disk_sizes_gib": {"data": 0.125}, "disk_limits": {"data": limits}})
    assert modes(result) == {"data": "live"}
    assert state.disks["data"] == 128 * 2**20
    assert state.limits["data"] is not None and state.limits["data"].iops_write == 100
    await resize(api, {"disks_remove": ["data"], "nics_remove": ["nic0"]})
    assert "data" not in state.disks and state.nics == []
    assert (await show(api))["status"]["applied"]["disks"] == (await show(api))["spec"]["disks"]


@pytest.mark.parametrize(
    ("body", "status", "code", "words"),
    [
        ({"memory_mib": 128}, 400, "invalid_input", "below the minimum"),
        ({"memory_mib": 4096}, 400, "invalid_input", "above the maximum 1024 MiB"),
        ({"vcpus": 5}, 400, "invalid_input", "more than max_vcpus 4"),
        ({"disks_remove": ["root"]}, 400, "invalid_input", "boot disk"),
        ({"disks_remove": ["nope"]}, 404, "not_found", "no disk 'nope'"),
        ({"disk_sizes_gib": {"root": 0.5}}, 400, "invalid_input", "shrinking"),
        ({"disk_limits": {"root": {"iops_total": 0}}}, 400, "invalid_input", "iops_total"),
        ({"cpu_limit_pct": -5}, 400, "invalid_input", "cpu_limit_pct"),
        ({"nics_remove": ["eth9"]}, 404, "not_found", "no NIC"),
        ({}, 400, "invalid_input", "nothing to change"),
        ({"disks_add": [{"name": "x", "image": "tiny", "size_gib": 1}]}, 400, "invalid_input", ""),
    ],
)
async def test_bad_input_changes_nothing(
    api: httpx.AsyncClient,
    platform: Platform,
    body: dict[str, Any],
    status: int,
    code: str,
    words: str,
) -> None:
    """Each bad change is one clear error; nothing is written and the VM runs unchanged."""
    await create(
        api, start=True, **BIG, min_memory_mib=256, disks=[{"size_gib": 1, "image": "tiny"}]
    )
    before = await snapshot(platform.store)
    message = assert_error(await patch(api, body), status, code)
    assert words in message
    assert await snapshot(platform.store) == before
    assert (await show(api))["status"]["power"] == "running"


async def test_paused_vm_refuses_hot_plug_but_takes_limits(api: httpx.AsyncClient) -> None:
    """A paused guest cannot answer a hot-plug: 409; a CPU cap needs no guest and applies."""
    await create(api, start=True, **BIG)
    await act(api, "demo", "pause")
    message = assert_error(await patch(api, {"vcpus": 2}), 409, "invalid_state")
    assert "resume it first" in message
    assert modes(await resize(api, {"cpu_weight": 200})) == {"cpu_weight": "live"}


async def test_failed_live_change_is_rolled_back(
    api: httpx.AsyncClient, driver: TestDriver
) -> None:
    """When the driver fails a change, the operation fails and the old spec is restored."""
    await create(api, start=True, **BIG)
    driver.fail_next_live = "device_add failed"
    op = await wait_op(api, await patch(api, {"vcpus": 2}))
    assert op["status"] == "failure" and "device_add failed" in op["error_message"]
    inst = await show(api)
    assert inst["spec"]["vcpus"] == 1 and inst["pending"] == []


async def test_admission_names_the_shortfall(api: httpx.AsyncClient, platform: Platform) -> None:
    """Growing or starting beyond host x ratio is refused with what is needed and available."""
    platform.services.capacity.ratios.memory = 1.5  # type: ignore[union-attr]
    # 4096 MiB x 1.5 = 6144 MiB: "demo" holds 512 MiB and "other" 3584 MiB -> 2048 MiB left.
    await create(api, start=True, **BIG)
    await create(api, "other", start=True, memory_mib=3584)
    await create(api, "third", memory_mib=3072)
    r = await api.put("/1.0/instances/third/state", json={"action": "start"})
    message = assert_error(r, 409, "insufficient_capacity")
    assert "needs 3072 MiB, 2048 MiB available at ratio 1.5" in message
    await create(api, "fourth", start=True, memory_mib=2048)
    cap = (await api.get("/1.0/host/capacity")).json()
    assert (cap["memory_limit_mib"], cap["allocated_memory_mib"]) == (6144, 6144)
    assert cap["instances"] == 3 and cap["used"]["memory_used_mib"] > 0
    # demo's own 512 MiB are not counted against it: 6144 - 5632 = 512 MiB for it.
    message = assert_error(await patch(api, {"memory_mib": 1024}), 409, "insufficient_capacity")
    assert "needs 1024 MiB, 512 MiB available at ratio 1.5" in message
    await act(api, "fourth", "stop")
    await resize(api, {"memory_mib": 1024})


async def test_stale_etag_and_idempotent_retry(api: httpx.AsyncClient) -> None:
    """If-Match with an old ETag is 412; a retried Idempotency-Key answers once."""
    await create(api, start=True, **BIG)
    etag = (await api.get("/1.0/instances/demo")).headers["ETag"]
    await resize(api, {"cpu_weight": 50})
    assert_error(await patch(api, {"cpu_weight": 60}, headers={"If-Match": etag}), 412,
                 "precondition_failed")  # fmt: skip
    key = {"Idempotency-Key": "resize-1"}
    first, again = (
        await patch(api, {"vcpus": 2}, headers=key),
        await patch(api, {"vcpus": 2}, headers=key),
    )
    assert first.json()["id"] == again.json()["id"]
    assert again.headers["Idempotent-Replayed"] == "true"
