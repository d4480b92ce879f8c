"""Kept disks (``vm delete`` without ``disks``) are never silently reused: every create
path refuses a name that has them (409 ``kept_disks``, naming the files, nothing
written) unless ``reuse_disks`` attaches them; ``/1.0/disks`` lists and deletes them."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import httpx

from virtfleet.app.bootstrap import Platform
from virtfleet.storage import ova

from .helpers import act, assert_error, create, snapshot, wait_op


async def _kept(api: httpx.AsyncClient, platform: Platform, name: str) -> Path:
    """Create and start ``name`` (its disk file made), stop it, delete it keeping disks."""
    await create(api, name, start=True)
    assert (await act(api, name, "stop", force=True))["status"] == "success"
    op = await wait_op(api, await api.delete(f"/1.0/instances/{name}"))
    assert op["status"] == "success", op
    disk = platform.settings.disks_dir / name / "root.qcow2"
    assert disk.is_file()
    return disk


async def test_create_refused_then_reuse_attaches_the_same_file(
    api: httpx.AsyncClient, image: str, platform: Platform
) -> None:
    disk = await _kept(api, platform, "demo")
    inode = disk.stat().st_ino
    before = await snapshot(platform.store)
    body = {"name": "demo", "image": image, "start": True}
    detail = assert_error(await api.post("/1.0/instances", json=body), 409, "kept_disks")
    assert "root.qcow2" in detail and "--reuse-disks" in detail and "disk delete demo" in detail
    assert await snapshot(platform.store) == before  # nothing written
    assert disk.stat().st_ino == inode  # nor the disk touched

    op = await wait_op(api, await api.post("/1.0/instances", json={**body, "reuse_disks": True}))
    assert op["status"] == "success", op
    assert (await api.get("/1.0/instances/demo")).json()["status"]["power"] == "running"
    assert disk.stat().st_ino == inode  # the old file, not a new one


async def test_list_and_delete_kept_disks(
    api: httpx.AsyncClient, image: str, platform: Platform
) -> None:
    await _kept(api, platform, "gone")
    await create(api, "alive", start=True)
    everything = {d["name"]: d for d in (await api.get("/1.0/disks")).json()}
    assert set(everything) == {"gone", "alive"}
    assert everything["gone"]["orphaned"] and not everything["alive"]["orphaned"]
    assert everything["gone"]["files"] == ["root.qcow2"]
    assert everything["gone"]["size_bytes"] > 0
    kept = (await api.get("/1.0/disks", params={"orphaned": "true"})).json()
    assert [d["name"] for d in kept] == ["gone"]

    detail = assert_error(await api.delete("/1.0/disks/alive"), 409, "in_use")
    assert "vm delete alive --disks" in detail
    assert (platform.settings.disks_dir / "alive" / "root.qcow2").is_file()

    assert (await api.delete("/1.0/disks/gone")).json() == {"name": "gone", "deleted": True}
    assert not (platform.settings.disks_dir / "gone").exists()
    assert (await api.delete("/1.0/disks/gone")).json() == {"name": "gone", "deleted": False}
    assert (await api.get("/1.0/disks", params={"orphaned": "true"})).json() == []
    await create(api, "gone")  # free again
    assert_error(await api.delete("/1.0/disks/..bad"), 400, "invalid_name")


async def test_a_failed_reusing_start_keeps_the_disks(
    api: httpx.AsyncClient, image: str, platform: Platform, driver: object
) -> None:
    """create+start is undone on a failed start, but reused disks are the user's: kept."""
    disk = await _kept(api, platform, "demo")
    driver.fail_next_start = "injected start failure"  # type: ignore[attr-defined]
    body = {"name": "demo", "image": image, "start": True, "reuse_disks": True}
    op = await wait_op(api, await api.post("/1.0/instances", json=body))
    assert op["status"] == "failure", op
    assert (await api.get("/1.0/instances")).json() == []
    assert disk.is_file()


async def test_clones_are_refused_before_any_is_made(
    api: httpx.AsyncClient, image: str, platform: Platform
) -> None:
    await _kept(api, platform, "web-2")
    r = await api.post("/1.0/templates", json={"name": "tpl", "image": image})
    assert (await wait_op(api, r))["status"] == "success"
    for clone in ("linked", "full"):
        body = {"names": ["web-{1..3}"], "clone": clone}
        detail = assert_error(await api.post("/1.0/templates/tpl/instances", json=body),
                              409, "kept_disks")  # fmt: skip
        assert "'web-2'" in detail and "--reuse-disks" not in detail
    assert (await api.get("/1.0/instances")).json() == []
    assert not (platform.settings.disks_dir / "web-1").exists()


def _package(tmp: Path) -> Path:
    """A small OVA whose system is named ``legacy``: one empty 16 MiB VMDK."""
    vmdk = tmp / "disk0.vmdk"
    subprocess.run(["qemu-img", "create", "-q", "-f", "vmdk", str(vmdk), "16M"], check=True)
    package = tmp / "legacy.ova"
    system = ova.OvfSystem(name="legacy", disks=[ova.OvfDisk("disk0", 16 << 20)])
    ova.write_package(package, system, [vmdk])
    return package


async def test_ova_import_is_refused_before_importing(
    api: httpx.AsyncClient, image: str, platform: Platform, tmp_path: Path
) -> None:
    await _kept(api, platform, "legacy")
    package = await asyncio.to_thread(_package, tmp_path)
    r = await api.post("/1.0/ova/import", json={"path": str(package)})
    assert "root.qcow2 (in " in assert_error(r, 409, "kept_disks")
    assert "legacy-disk0" not in {i["name"] for i in (await api.get("/1.0/images")).json()}
