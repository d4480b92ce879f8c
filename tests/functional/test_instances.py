"""Instance life cycle through the public HTTP API: create, list, show, power, delete."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from virtfleet.app.bootstrap import Platform

from .helpers import act, assert_error, create, wait_op
from .platform import TestDriver

pytestmark = pytest.mark.usefixtures("image")


async def test_create_without_start_lists_a_stopped_instance(api: httpx.AsyncClient) -> None:
    """A created instance is listed stopped, with the mode its next start would use."""
    await create(api, vcpus=2, memory_mib=512)
    [inst] = (await api.get("/1.0/instances")).json()
    # The test host has no usable KVM, so accel=auto would run under TCG.
    assert (inst["name"], inst["status"]["power"], inst["mode"]) == ("demo", "stopped", "tcg")
    assert (inst["spec"]["vcpus"], inst["spec"]["memory_mib"]) == (2, 512)


async def test_create_with_start_runs_it(api: httpx.AsyncClient) -> None:
    """``start: true`` returns once the agent has it running; the mode is the accel in use."""
    op = await create(api, start=True)
    assert op["result"]["power"] == "running"
    inst = (await api.get("/1.0/instances/demo")).json()
    assert (inst["status"]["power"], inst["mode"]) == ("running", "tcg")


async def test_power_cycle(api: httpx.AsyncClient, platform: Platform) -> None:
    """start, pause, resume, restart and stop each end in the state they promise."""
    await create(api)
    for action, power in [
        ("start", "running"),
        ("pause", "paused"),
        ("resume", "running"),
        ("restart", "running"),
        ("stop", "stopped"),
    ]:
        op = await act(api, "demo", action)
        assert (op["status"], op["result"]["power"]) == ("success", power), (action, op)
    desired = (await api.get("/1.0/instances/demo")).json()["desired"]
    assert desired["restart"] == 5 and desired["generation"] == 6


async def test_wrong_state_is_refused_before_anything_changes(api: httpx.AsyncClient) -> None:
    """Pausing a stopped instance is 409 invalid_state naming both states; desired untouched."""
    await create(api)
    r = await api.put("/1.0/instances/demo/state", json={"action": "pause"})
    message = assert_error(r, 409, "invalid_state")
    assert "stopped" in message and "running" in message
    assert (await api.get("/1.0/instances/demo")).json()["desired"]["generation"] == 1


@pytest.mark.parametrize(
    ("action", "force"), [("resume", False), ("stop", False), ("restart", False), ("stop", True)]
)
async def test_actions_on_a_stopped_instance_are_409(
    api: httpx.AsyncClient, action: str, force: bool
) -> None:
    """Only start is allowed from stopped (even a forced stop is refused)."""
    await create(api)
    r = await api.put("/1.0/instances/demo/state", json={"action": action, "force": force})
    assert_error(r, 409, "invalid_state")


async def test_starting_a_running_instance_is_409(api: httpx.AsyncClient) -> None:
    """start needs stopped or crashed."""
    await create(api, start=True)
    assert_error(
        await api.put("/1.0/instances/demo/state", json={"action": "start"}), 409, "invalid_state"
    )


async def test_unknown_image_is_404_naming_it(api: httpx.AsyncClient, platform: Platform) -> None:
    """An instance on a missing image fails fast with 404 and writes nothing."""
    rev = await platform.store.revision()
    r = await api.post("/1.0/instances", json={"name": "demo", "image": "nope"})
    assert "'nope'" in assert_error(r, 404, "not_found")
    assert await platform.store.revision() == rev


async def test_duplicate_name_is_409(api: httpx.AsyncClient) -> None:
    """A second instance with the same name is 409 already_exists."""
    await create(api)
    r = await api.post("/1.0/instances", json={"name": "demo", "image": "tiny"})
    assert_error(r, 409, "already_exists")


async def test_more_than_the_host_has_is_409(api: httpx.AsyncClient, platform: Platform) -> None:
    """Asking for more vCPUs and memory than the host has names both shortfalls."""
    rev = await platform.store.revision()
    body = {"name": "big", "image": "tiny", "vcpus": 8, "memory_mib": 8192}
    message = assert_error(
        await api.post("/1.0/instances", json=body), 409, "insufficient_capacity"
    )
    assert "8 vCPUs" in message and "8192 MiB" in message
    assert await platform.store.revision() == rev


async def test_unknown_instance_is_404(api: httpx.AsyncClient) -> None:
    """GET and PUT state on a missing instance answer 404 not_found."""
    assert_error(await api.get("/1.0/instances/ghost"), 404, "not_found")
    r = await api.put("/1.0/instances/ghost/state", json={"action": "start"})
    assert_error(r, 404, "not_found")


async def test_delete_removes_the_instance(api: httpx.AsyncClient) -> None:
    """DELETE of a stopped instance waits until the agent removed it."""
    await create(api)
    op = await wait_op(api, await api.delete("/1.0/instances/demo", params={"disks": "true"}))
    assert (op["status"], op["result"]["deleted"]) == ("success", True)
    assert_error(await api.get("/1.0/instances/demo"), 404, "not_found")
    kinds = [e["kind"] for e in (await api.get("/1.0/events")).json()]
    assert "instance.deleted" in kinds


async def test_delete_running_needs_force(api: httpx.AsyncClient) -> None:
    """A running instance is not deleted without force; with force it is."""
    await create(api, start=True)
    assert_error(await api.delete("/1.0/instances/demo"), 409, "invalid_state")
    op = await wait_op(api, await api.delete("/1.0/instances/demo", params={"force": "true"}))
    assert op["status"] == "success"
    assert (await api.get("/1.0/instances")).json() == []


async def test_delete_is_idempotent(api: httpx.AsyncClient) -> None:
    """Deleting a missing instance is a successful operation that deleted nothing."""
    op = await wait_op(api, await api.delete("/1.0/instances/ghost"))
    assert (op["status"], op["result"]["deleted"]) == ("success", False)


async def test_agent_error_is_returned_with_its_code(
    api: httpx.AsyncClient, driver: TestDriver
) -> None:
    """An error the agent records fails the operation with the agent's code and message."""
    await create(api)
    driver.fail_next_start = "qemu exited with status 1"
    op = await act(api, "demo", "start")
    assert (op["status"], op["error_code"]) == ("failure", "process_failed")
    assert op["error_message"] == "qemu exited with status 1"


async def test_no_agent_answer_times_out(
    api: httpx.AsyncClient, platform: Platform, driver: TestDriver
) -> None:
    """When the agent does not act, the operation fails with ``timeout`` instead of hanging."""
    await create(api)
    platform.services.instances.wait_timeout_s = 0.1
    driver.gates["demo"] = asyncio.Event()
    op = await act(api, "demo", "start", timeout_s=0.1)
    assert (op["status"], op["error_code"]) == ("failure", "timeout")


async def test_serial_log_tail(api: httpx.AsyncClient, tmp_path: Path) -> None:
    """The log endpoint returns the last ``tail_bytes`` of the serial log."""
    await create(api)
    (tmp_path / "console" / "demo.log").write_text("boot ok\nlogin: ")
    r = await api.get("/1.0/instances/demo/log", params={"tail_bytes": 7})
    assert r.json() == {"name": "demo", "log": "login: "}
