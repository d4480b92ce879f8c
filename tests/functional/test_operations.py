"""Operations: per-target ordering, parallelism across targets, wait, cancel, recovery."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from virtfleet.app.bootstrap import Platform
from virtfleet.model.operation import Operation, OperationStatus
from virtfleet.service.operations import SHUTDOWN, OpContext, OperationRunner
from virtfleet.state.repos import EventLog, operation_repo

from .helpers import assert_error, create, wait_op
from .platform import TestDriver

pytestmark = pytest.mark.usefixtures("image")


async def put_state(api: httpx.AsyncClient, name: str, action: str) -> dict[str, object]:
    r = await api.put(f"/1.0/instances/{name}/state", json={"action": action})
    assert r.status_code == 202, r.text
    return dict(r.json())


async def status_of(api: httpx.AsyncClient, op: dict[str, object]) -> str:
    return str((await api.get(f"/1.0/operations/{op['id']}")).json()["status"])


async def test_ops_on_one_instance_run_in_submission_order(
    api: httpx.AsyncClient, driver: TestDriver
) -> None:
    """Requests queued back to back are accepted and carried out one after another, in order."""
    await create(api)
    ops = [await put_state(api, "demo", a) for a in ("start", "pause", "resume", "stop")]
    done = [await wait_op(api, op) for op in ops]
    assert [d["status"] for d in done] == ["success"] * 4
    calls = [method for method, name in driver.calls if name == "demo"]
    assert calls == ["start", "pause", "resume", "stop"]


async def test_ops_on_two_instances_run_in_parallel(
    api: httpx.AsyncClient, driver: TestDriver
) -> None:
    """While one instance's operation is blocked, another instance's completes."""
    await create(api, "a")
    await create(api, "b")
    gate = driver.gates["a"] = asyncio.Event()
    op_a = await put_state(api, "a", "start")
    op_b = await put_state(api, "b", "start")
    assert (await wait_op(api, op_b))["status"] == "success"
    assert await status_of(api, op_a) == "running"
    gate.set()
    assert (await wait_op(api, op_a))["status"] == "success"


async def test_later_op_waits_behind_a_blocked_one(
    api: httpx.AsyncClient, driver: TestDriver
) -> None:
    """A second request on a busy instance is queued (pending), never failed for a lock."""
    await create(api)
    gate = driver.gates["demo"] = asyncio.Event()
    first = await put_state(api, "demo", "start")
    second = await put_state(api, "demo", "stop")
    await asyncio.sleep(0.05)
    assert (await status_of(api, first), await status_of(api, second)) == ("running", "pending")
    gate.set()
    assert (await wait_op(api, second))["status"] == "success"
    assert (await api.get("/1.0/instances/demo")).json()["status"]["power"] == "stopped"


async def test_wait_returns_an_unfinished_op_after_the_timeout(
    api: httpx.AsyncClient, driver: TestDriver
) -> None:
    """``/wait`` answers with the operation as it is once ``timeout_s`` passed."""
    await create(api)
    gate = driver.gates["demo"] = asyncio.Event()
    op = await put_state(api, "demo", "start")
    r = await api.get(f"/1.0/operations/{op['id']}/wait", params={"timeout_s": 0.05})
    assert r.json()["status"] == "running"
    gate.set()


async def test_state_change_with_wait_s_answers_once_done(
    api: httpx.AsyncClient, driver: TestDriver
) -> None:
    """``wait_s`` makes the request answer with the finished operation (one request, no
    poll); one that takes longer answers as it is after ``wait_s``, and goes on."""
    await create(api)
    r = await api.put("/1.0/instances/demo/state", json={"action": "start", "wait_s": 10})
    assert r.status_code == 202, r.text
    assert (r.json()["status"], r.json()["result"]["power"]) == ("success", "running")
    r = await api.put("/1.0/instances/demo/state", json={"action": "stop", "wait_s": 10})
    assert r.json()["status"] == "success"
    gate = driver.gates["demo"] = asyncio.Event()
    r = await api.put("/1.0/instances/demo/state", json={"action": "start", "wait_s": 0.05})
    assert r.json()["status"] == "running"
    gate.set()
    assert (await wait_op(api, r.json()))["status"] == "success"
    bad = await api.put("/1.0/instances/demo/state", json={"action": "stop", "wait_s": 601})
    assert_error(bad, 400, "invalid_input")


async def test_the_answer_comes_first_and_the_record_right_after(platform: Platform) -> None:
    """A waiter gets the outcome before the final record is written; the record is written
    in the same pass of the loop, and the runner serves the outcome meanwhile."""
    runner = platform.services.operations
    repo = operation_repo(platform.store)

    async def work(ctx: OpContext) -> dict[str, object]:
        return {"done": True}

    op = await runner.submit("test.work", "t/1", work)
    answered = await runner.wait(op.id, 5)
    stored = await repo.get_raw(op.id)
    assert answered.status is OperationStatus.SUCCESS and answered.result == {"done": True}
    assert stored is not None and stored[0].status is OperationStatus.RUNNING  # not yet
    assert (await runner.get(op.id)).status is OperationStatus.SUCCESS
    assert [o.status for o in await runner.list() if o.id == op.id] == [OperationStatus.SUCCESS]
    await asyncio.sleep(0)
    stored = await repo.get_raw(op.id)
    assert stored is not None and stored[0].status is OperationStatus.SUCCESS


async def test_cancel_a_running_operation(api: httpx.AsyncClient, driver: TestDriver) -> None:
    """DELETE on a running operation cancels it: status cancelled, code cancelled."""
    await create(api)
    driver.gates["demo"] = asyncio.Event()
    op = await put_state(api, "demo", "start")
    await asyncio.sleep(0.05)
    r = await api.delete(f"/1.0/operations/{op['id']}")
    assert r.status_code == 200
    assert (r.json()["status"], r.json()["error_code"]) == ("cancelled", "cancelled")


async def test_a_cancelled_stop_leaves_the_instance_as_it_was(
    api: httpx.AsyncClient, driver: TestDriver
) -> None:
    """A stop waiting for a guest that does not power off, cancelled: the instance says
    running again (not "stopping"), and the next stop stops it."""
    await create(api, start=True)
    driver.stop_gates["demo"] = asyncio.Event()
    op = await put_state(api, "demo", "stop")
    for _ in range(200):
        if (await api.get("/1.0/instances/demo")).json()["status"]["power"] == "stopping":
            break
        await asyncio.sleep(0.01)
    r = await api.delete(f"/1.0/operations/{op['id']}")
    assert r.json()["status"] == "cancelled", r.text
    for _ in range(200):  # the agent ends its stop once it sees the desired state
        status = (await api.get("/1.0/instances/demo")).json()["status"]
        if status["power"] != "stopping":
            break
        await asyncio.sleep(0.01)
    assert (status["power"], status["reason"]) == ("running", "stop cancelled"), status
    assert (await driver.status("demo")).power == "running"  # no stop went on behind it
    del driver.stop_gates["demo"]
    assert (await wait_op(api, await put_state(api, "demo", "stop")))["status"] == "success"
    assert (await api.get("/1.0/instances/demo")).json()["status"]["power"] == "stopped"


async def test_cancel_a_queued_operation_keeps_the_queue_order(
    api: httpx.AsyncClient, driver: TestDriver
) -> None:
    """Cancelling a pending operation does not let the next one overtake the running one."""
    await create(api)
    gate = driver.gates["demo"] = asyncio.Event()
    first = await put_state(api, "demo", "start")
    second = await put_state(api, "demo", "pause")
    third = await put_state(api, "demo", "resume")
    assert (await api.delete(f"/1.0/operations/{second['id']}")).json()["status"] == "cancelled"
    await asyncio.sleep(0.05)
    assert await status_of(api, third) == "pending"
    gate.set()
    assert (await wait_op(api, first))["status"] == "success"
    resumed = await wait_op(api, third)
    assert (resumed["status"], resumed["error_code"]) == ("failure", "invalid_state")


async def test_cancel_a_finished_operation_is_409(api: httpx.AsyncClient) -> None:
    """A finished operation cannot be cancelled."""
    op = await create(api)
    assert_error(await api.delete(f"/1.0/operations/{op['id']}"), 409, "invalid_state")


async def test_unknown_operation_is_404(api: httpx.AsyncClient) -> None:
    """Unknown operation ids answer 404 on show, wait and cancel."""
    assert_error(await api.get("/1.0/operations/nope"), 404, "not_found")
    assert_error(await api.get("/1.0/operations/nope/wait"), 404, "not_found")
    assert_error(await api.delete("/1.0/operations/nope"), 404, "not_found")


async def test_operations_are_listed_and_report_progress(api: httpx.AsyncClient) -> None:
    """Operations are listed oldest first and progress shows up as events."""
    op = await create(api, start=True)
    ops = (await api.get("/1.0/operations")).json()
    assert ops[-1]["id"] == op["id"] and ops[-1]["progress"] == 100
    progress = [
        e for e in (await api.get("/1.0/events")).json() if e["kind"] == "operation.progress"
    ]
    assert progress and progress[-1]["data"]["operation"] == op["id"]


async def test_recover_fails_operations_left_by_a_previous_daemon(platform: Platform) -> None:
    """On start-up, operations left pending/running are failed as interrupted."""
    repo = operation_repo(platform.store)
    await repo.put(
        "old", Operation(id="old", kind="instance.start", status=OperationStatus.RUNNING)
    )
    runner = OperationRunner(platform.store, EventLog(platform.store))
    assert await runner.recover() == 1
    op = await runner.get("old")
    assert (op.status, op.error_message) == (
        OperationStatus.FAILURE,
        "interrupted by daemon restart",
    )


async def test_unexpected_exception_fails_the_op_as_internal(platform: Platform) -> None:
    """A bug inside an operation fails it with code internal and a one-line message."""

    async def broken(ctx: OpContext) -> dict[str, object]:
        raise KeyError("line one\nline two")

    op = await platform.services.operations.submit("test.broken", "t", broken)
    done = await platform.services.operations.wait(op.id, 5)
    assert (done.status, done.error_code) == (OperationStatus.FAILURE, "internal")
    assert done.error_message is not None and "\n" not in done.error_message


async def test_shutdown_interrupts_running_operations(platform: Platform) -> None:
    """Closing the runner runs each operation's undo and records it as interrupted."""
    undone = asyncio.Event()

    async def slow(ctx: OpContext) -> dict[str, object]:
        try:
            await asyncio.sleep(60)
        finally:
            undone.set()
        return {}

    op = await platform.services.operations.submit("test.slow", "t", slow)
    await asyncio.sleep(0.01)
    await platform.services.operations.close()
    done = await platform.services.operations.get(op.id)
    assert undone.is_set()
    assert (done.status, done.error_message) == (
        OperationStatus.FAILURE,
        "interrupted by daemon shutdown",
    )


async def test_cancel_or_shutdown_before_an_operation_ever_ran(platform: Platform) -> None:
    """An operation stopped before its task took a first step is still recorded as ended
    (its body never runs, so the runner records it): cancelled, or interrupted at shutdown."""

    async def work(ctx: OpContext) -> dict[str, object]:
        return {}

    runner = platform.services.operations
    first = await runner.submit("test.never", "t", work)
    cancelled = await runner.cancel(first.id)  # nothing in between lets the task start
    assert (cancelled.status, cancelled.error_code) == (OperationStatus.CANCELLED, "cancelled")
    second = await runner.submit("test.never", "t", work)
    await runner.close()
    stopped = await runner.get(second.id)
    assert (stopped.status, stopped.error_message) == (OperationStatus.FAILURE, SHUTDOWN)


async def test_cancelling_create_and_start_removes_the_instance(
    api: httpx.AsyncClient, driver: TestDriver
) -> None:
    """Cancelling a create+start undoes it: the half-made instance is deleted."""
    driver.gates["half"] = asyncio.Event()
    r = await api.post("/1.0/instances", json={"name": "half", "image": "tiny", "start": True})
    op = r.json()
    await asyncio.sleep(0.05)
    cancel = asyncio.create_task(api.delete(f"/1.0/operations/{op['id']}"))
    await asyncio.sleep(0.05)
    driver.gates["half"].set()  # the agent finishes the start, then carries out the undo
    assert (await cancel).json()["status"] == "cancelled"
    async with asyncio.timeout(10):
        while (await api.get("/1.0/instances/half")).status_code != 404:
            await asyncio.sleep(0.02)
