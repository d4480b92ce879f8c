"""Who may touch an instance's files, and when (fake driver, real disk files): a restore
over a VM is ordered with its starts, an image is not rebuilt under its users, and a
create claims its name before it writes a disk, so the loser of two creates of one
name never deletes the winner's files."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from virtfleet.app.bootstrap import Platform
from virtfleet.drivers.base import LaunchContext
from virtfleet.model.instance import InstanceSpec, InstanceStatus

from .helpers import act, assert_error, create, wait_op
from .platform import TestDriver

pytestmark = pytest.mark.usefixtures("image")


def backing_of(path: Path) -> str:
    out = subprocess.run(
        ["qemu-img", "info", "-U", "--output=json", str(path)],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    return str(json.loads(out).get("backing-filename", ""))


def hold(target: object, attr: str, monkeypatch: pytest.MonkeyPatch) -> tuple[
    asyncio.Event, asyncio.Event, list[str]
]:  # fmt: skip
    """Make ``target.attr`` (a coroutine function) wait for the returned ``release`` after
    setting ``reached``; ``done`` gets ``attr`` appended once the original returned."""
    reached, release, done = asyncio.Event(), asyncio.Event(), []
    original: Callable[..., Awaitable[Any]] = getattr(target, attr)

    async def held(*args: Any, **kwargs: Any) -> Any:
        reached.set()
        await release.wait()
        result = await original(*args, **kwargs)
        done.append(attr)
        return result

    monkeypatch.setattr(target, attr, held)
    return reached, release, done


async def backed_up_vm(api: httpx.AsyncClient) -> str:
    """A stopped VM ``demo`` with its disk made, and the id of a backup of it."""
    await create(api, start=True)
    assert (await act(api, "demo", "stop"))["status"] == "success"
    op = await wait_op(api, await api.post("/1.0/backups", json={"instance": "demo"}))
    assert op["status"] == "success", op
    stored = (await api.get(f"/1.0/backups/{op['result']['id']}")).json()
    assert stored["stats"]["seconds"] > 0, stored  # the stored manifest has its duration
    return str(op["result"]["id"])


async def test_restore_over_a_vm_whose_start_was_asked_first(
    api: httpx.AsyncClient, platform: Platform, driver: TestDriver
) -> None:
    """A start asked before the restore goes first: the restore is refused (the VM runs)
    and the running VM's disk file is never swapped under it."""
    backup = await backed_up_vm(api)
    disk = platform.settings.disks_dir / "demo" / "root.qcow2"
    inode = disk.stat().st_ino
    driver.gates["demo"] = asyncio.Event()  # the start stays in flight
    start = await api.put("/1.0/instances/demo/state", json={"action": "start"})
    assert start.status_code == 202, start.text
    r = await api.post(f"/1.0/backups/{backup}/restore", json={})
    if r.status_code == 202:  # refused when its turn comes, at the latest
        op = await wait_op(api, r)
        assert (op["status"], op["error_code"]) == ("failure", "invalid_state"), op
    else:
        assert_error(r, 409, "invalid_state")
    assert disk.stat().st_ino == inode
    driver.gates["demo"].set()
    assert (await wait_op(api, start))["status"] == "success"
    assert disk.stat().st_ino == inode


async def test_a_start_asked_during_a_restore_waits_for_it(
    api: httpx.AsyncClient, platform: Platform, driver: TestDriver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A start asked while a restore over the VM runs waits until the disks are swapped."""
    backup = await backed_up_vm(api)
    assert platform.services.backups is not None
    manager = platform.host.backups
    reached, release, order = hold(manager, "restore_disks", monkeypatch)
    original_start = driver.start

    async def start(spec: InstanceSpec, ctx: LaunchContext) -> InstanceStatus:
        order.append("start")
        return await original_start(spec, ctx)

    monkeypatch.setattr(driver, "start", start)
    restore = await api.post(f"/1.0/backups/{backup}/restore", json={})
    assert restore.status_code == 202, restore.text
    await asyncio.wait_for(reached.wait(), 10)
    start_op = await api.put("/1.0/instances/demo/state", json={"action": "start"})
    assert start_op.status_code == 202, start_op.text
    # Bounded look for something that must not happen: the start running meanwhile.
    r = await api.get(f"/1.0/operations/{start_op.json()['id']}/wait", params={"timeout_s": 0.5})
    assert r.json()["status"] == "pending", r.json()
    release.set()
    assert (await wait_op(api, restore))["status"] == "success"
    assert (await wait_op(api, start_op))["status"] == "success"
    assert order == ["restore_disks", "start"]


async def test_build_force_is_refused_while_instances_use_the_image(
    api: httpx.AsyncClient, image: str
) -> None:
    """Rebuilding an image in use would pull it from under their disks: 409 naming them."""
    await create(api, "web")
    await create(api, "db")
    r = await api.post("/1.0/images", json={"name": image, "force": True})
    message = assert_error(r, 409, "in_use")
    assert "web" in message and "db" in message
    for name in ("web", "db"):
        deleted = await wait_op(api, await api.delete(f"/1.0/instances/{name}"))
        assert deleted["status"] == "success", deleted
    rebuilt = await wait_op(api, await api.post("/1.0/images", json={"name": image, "force": True}))
    assert rebuilt["status"] == "success", rebuilt


async def test_a_clone_and_a_create_of_one_name_leave_the_winners_disk(
    api: httpx.AsyncClient, platform: Platform, image: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A clone writing its disk and a create+start of the same name: whichever loses,
    the instance that exists keeps its own disk file."""
    op = await wait_op(api, await api.post("/1.0/templates", json={"name": "tpl", "image": image}))
    assert op["status"] == "success", op
    from virtfleet.storage import clones

    reached, release, _ = hold(clones, "linked", monkeypatch)
    clone = await api.post("/1.0/templates/tpl/instances", json={"names": ["web"]})
    assert clone.status_code == 202, clone.text
    await asyncio.wait_for(reached.wait(), 10)  # the clone is about to write web's disk
    rival = await api.post("/1.0/instances", json={"name": "web", "image": image, "start": True})
    rival_op = await wait_op(api, rival) if rival.status_code == 202 else None
    release.set()
    await wait_op(api, clone)
    if rival_op is None:
        assert_error(rival, 409, "already_exists")
    await winner_keeps_its_disk(platform, "tiny" if rival_op is not None else "tpl")


async def test_a_restore_and_a_create_of_one_name_leave_the_winners_disk(
    api: httpx.AsyncClient, platform: Platform, image: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A restore to a new VM writing its disks and a create+start of that name: the
    instance that exists keeps its own disk file."""
    backup = await backed_up_vm(api)
    assert platform.services.backups is not None
    manager = platform.host.backups
    # Held where it writes a disk file (past its check that the directory is empty).
    reached, release, _ = hold(manager, "_restore_disk", monkeypatch)
    restore = await api.post(f"/1.0/backups/{backup}/restore", json={"target": "web"})
    assert restore.status_code == 202, restore.text
    await asyncio.wait_for(reached.wait(), 10)
    rival = await api.post("/1.0/instances", json={"name": "web", "image": image, "start": True})
    won = rival.status_code == 202
    if won:
        await wait_op(api, rival)
    else:
        assert_error(rival, 409, "already_exists")
    release.set()
    await wait_op(api, restore)
    await winner_keeps_its_disk(platform, "tiny" if won else "")  # restored: no backing file


async def winner_keeps_its_disk(platform: Platform, backing: str) -> None:
    """``web`` exists with its own disk file: one over image ``backing`` ("": none)."""
    assert await platform.services.instances.get("web")
    disk = platform.settings.disks_dir / "web" / "root.qcow2"
    assert disk.is_file(), sorted(p.name for p in disk.parent.parent.iterdir())
    found = backing_of(disk)
    assert (Path(found).stem if found else "") == backing, found
