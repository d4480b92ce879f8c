"""Storage pools through the API: the default pool ``local`` exists after start, pools
are created, shown and deleted, hostile input is refused with nothing half-made, a pool
with volumes cannot go, a VM's disks are admitted against their pool's overcommit, and
a shared-dir pool is shared only while every host reads its marker back."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.functional.platform import running
from tests.functional.test_boot import FakeClock, boot_platform, client
from tests.functional.test_upgrade import FIXTURE_V3
from virtfleet.app.bootstrap import Platform
from virtfleet.model.host import HostRecord
from virtfleet.service.pools import PoolService
from virtfleet.state.hosts import HostRepo
from virtfleet.state.store import StateStore
from virtfleet.storage import qcow2, qemuimg
from virtfleet.storage.pools import PoolContext, probe

from .helpers import assert_error, create, wait_op


async def snapshot(store: StateStore) -> list[tuple[str, int]]:
    """Pool and instance keys with their revisions (not the status the agent writes on its
    own time): equal snapshots, nothing written."""
    kvs = await store.list("/")
    mine = [kv for kv in kvs if kv.key.startswith(("/storage", "/projects"))]
    return [(kv.key, kv.mod_revision) for kv in mine if not kv.key.endswith("/status")]


@pytest.fixture
def outside(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Outside the daemon's data dir (the functional platform's is the test's tmp_path)."""
    return tmp_path_factory.mktemp("pools")


POOLS = "/1.0/storage-pools"


async def _pool(api: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    r = await api.post(POOLS, json=body)
    assert r.status_code == 201, r.text
    return dict(r.json())


async def test_default_pool_is_the_data_dirs_disks(
    api: httpx.AsyncClient, image: str, platform: Platform
) -> None:
    [local] = (await api.get(POOLS)).json()
    assert (local["name"], local["type"], local["path"], local["health"]) == (
        "local",
        "dir",
        None,
        "ok",
    )
    assert local["capabilities"]["thin_clone"] and not local["capabilities"]["shared"]
    assert (
        local["capacity"]["total_bytes"]
        == os.statvfs(platform.settings.disks_dir).f_blocks
        * os.statvfs(platform.settings.disks_dir).f_frsize
    )
    await create(api, "old", start=True)  # a disk with no pool named lives in ``local``
    vols = (await api.get(f"{POOLS}/local/volumes")).json()
    assert [(v["name"], v["path"]) for v in vols] == [
        ("old/root", str(platform.settings.disks_dir / "old" / "root.qcow2"))
    ]
    assert (await api.get(f"{POOLS}/local/volumes/old/root")).json()["size_bytes"] > 0
    assert_error(await api.get(f"{POOLS}/local/volumes/old/nope"), 404, "not_found")
    assert_error(await api.delete(f"{POOLS}/local"), 409, "in_use")


async def test_create_show_delete_a_shared_dir_pool(api: httpx.AsyncClient, outside: Path) -> None:
    (outside / "nfs").mkdir()
    made = await _pool(
        api, name="shared", type="shared-dir", path=str(outside / "nfs"), overcommit=2
    )
    assert made["health"] == "ok" and made["capabilities"]["shared"]
    assert made["capabilities"]["live_migrate_without_copy"]
    [check] = made["checks"]
    assert check["marker_ok"] and check["lock_ok"]
    assert probe.read_marker(outside / "nfs") is not None
    assert (await api.get(f"{POOLS}/shared")).json() == made
    assert {p["name"] for p in (await api.get(POOLS)).json()} == {"local", "shared"}
    assert (await api.get(f"{POOLS}/shared/volumes")).json() == []
    assert_error(
        await api.post(POOLS, json={"name": "shared", "type": "dir", "path": str(outside)}),
        409,
        "already_exists",
    )
    assert_error(
        await api.post(POOLS, json={"name": "again", "type": "dir", "path": str(outside / "nfs")}),
        409,
        "in_use",
    )
    r = await api.delete(f"{POOLS}/shared")
    assert r.status_code == 200 and r.json() == {"name": "shared", "deleted": True}
    assert probe.read_marker(outside / "nfs") is None
    assert_error(await api.get(f"{POOLS}/shared"), 404, "not_found")


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"name": "p", "type": "dir", "path": "relative/dir"}, 400, "invalid_input"),
        ({"name": "p", "type": "dir", "path": "{tmp}/a/../a"}, 400, "invalid_input"),
        ({"name": "p", "type": "dir", "path": "{tmp}/file"}, 400, "invalid_input"),
        ({"name": "p", "type": "shared-dir", "path": "{tmp}/missing"}, 400, "invalid_input"),
        ({"name": "p", "type": "shared-dir", "path": "{data}/disks"}, 403, "path_not_allowed"),
        ({"name": "p", "type": "dir", "path": "{data}"}, 403, "path_not_allowed"),
        ({"name": "p", "type": "dir", "path": "/"}, 403, "path_not_allowed"),
        ({"name": "Bad_Name!", "type": "dir", "path": "{tmp}/a"}, 400, "invalid_name"),
        ({"name": "p", "type": "lvm", "path": "{tmp}/a"}, 400, "invalid_input"),
        ({"name": "p", "type": "dir", "path": "{tmp}/a", "hosts": ["nobody"]}, 400, "unknown_host"),
        ({"name": "p", "type": "dir", "path": "{tmp}/a", "overcommit": 0}, 400, "invalid_input"),
    ],
)
async def test_hostile_input_refused_nothing_made(
    api: httpx.AsyncClient,
    platform: Platform,
    outside: Path,
    body: dict[str, Any],
    status: int,
    code: str,
) -> None:
    (outside / "a").mkdir()
    (outside / "file").write_text("x")
    data = str(platform.settings.data_dir)
    body = {
        k: v.format(tmp=outside, data=data) if isinstance(v, str) else v for k, v in body.items()
    }
    before = await snapshot(platform.store)
    message = assert_error(await api.post(POOLS, json=body), status, code)
    assert "\n" not in message
    assert await snapshot(platform.store) == before
    assert not list((outside / "a").iterdir())  # no marker, no probe file left
    assert not [p for p in platform.settings.disks_dir.iterdir() if p.name.startswith(".virtfleet")]


async def test_vm_disk_names_its_pool_and_the_pool_cannot_go(
    api: httpx.AsyncClient, image: str, outside: Path
) -> None:
    (outside / "p").mkdir()
    await _pool(api, name="fast", type="dir", path=str(outside / "p"))
    await create(
        api,
        "vm1",
        disks=[{"name": "root", "image": image}, {"name": "data", "size_gib": 1, "pool": "fast"}],
    )
    [vol] = (await api.get(f"{POOLS}/fast/volumes")).json()
    assert (vol["name"], vol["path"], vol["size_bytes"]) == ("vm1/data", None, 1 << 30)
    assert (await api.get(f"{POOLS}/fast")).json()["capacity"]["allocated_bytes"] == 1 << 30
    detail = assert_error(await api.delete(f"{POOLS}/fast"), 409, "in_use")
    assert "vm1/data" in detail
    assert (await api.get(f"{POOLS}/fast")).status_code == 200


async def test_admission_refuses_a_disk_past_the_overcommit(
    api: httpx.AsyncClient, image: str, platform: Platform, outside: Path
) -> None:
    (outside / "p").mkdir()
    pool = await _pool(api, name="tight", type="dir", path=str(outside / "p"), overcommit=1)
    total_gib = pool["capacity"]["total_bytes"] / (1 << 30)
    before = await snapshot(platform.store)
    disks = [
        {"name": "root", "image": image},
        {"name": "big", "size_gib": total_gib + 1, "pool": "tight"},
    ]
    r = await api.post("/1.0/instances", json={"name": "big", "image": image, "disks": disks})
    assert "tight" in assert_error(r, 409, "pool_overcommitted")
    assert await snapshot(platform.store) == before
    unknown = [{"name": "root", "image": image, "pool": "nowhere"}]
    r = await api.post("/1.0/instances", json={"name": "lost", "image": image, "disks": unknown})
    assert "nowhere" in assert_error(r, 400, "invalid_input")
    # twice the space with overcommit 2: fits
    await _pool(api, name="thin", type="dir", path=str(outside), overcommit=2)
    fits = [
        {"name": "root", "image": image},
        {"name": "big", "size_gib": total_gib + 1, "pool": "thin"},
    ]
    await create(api, "fits", disks=fits)


async def test_shared_only_while_every_host_reads_the_marker_back(
    api: httpx.AsyncClient, platform: Platform, outside: Path
) -> None:
    (outside / "nfs").mkdir()
    await _pool(api, name="shared", type="shared-dir", path=str(outside / "nfs"))
    other = PoolService(platform.store, "host-b", PoolContext(outside / "b-disks"))
    [ok] = [c for c in await other.verify_here() if c.host == "host-b" and c.marker_ok]
    shown = (await api.get(f"{POOLS}/shared")).json()
    assert shown["capabilities"]["shared"] and len(shown["checks"]) == 2
    # host B's mount is another filesystem: it finds no marker there (simulated by removing it)
    token = probe.read_marker(outside / "nfs")
    probe.remove_marker(outside / "nfs")
    await other.verify_here()
    shown = (await api.get(f"{POOLS}/shared")).json()
    assert (
        not shown["capabilities"]["shared"]
        and not shown["capabilities"]["live_migrate_without_copy"]
    )
    assert shown["health"] == "unreachable" or shown["health"] == "degraded"
    assert any("no marker" in c["message"] for c in shown["checks"])
    assert token is not None and ok.lock_ok


async def test_an_upgraded_data_dir_gets_the_default_pool(tmp_path: Path) -> None:
    """A schema 3 data dir (made before pools): ``local`` appears at start and its VMs'
    disks (named with no pool) are its volumes; nothing is asked of the user."""
    for name in ("virtfleet.db", "host.json"):
        shutil.copyfile(FIXTURE_V3 / name, tmp_path / name)
    platform, _ = boot_platform(tmp_path, "any-boot", clock=FakeClock())
    async with running(platform), client(platform) as api:
        pools = (await api.get(POOLS)).json()
        vols = (await api.get(f"{POOLS}/local/volumes")).json()
        names = sorted(i["name"] for i in (await api.get("/1.0/instances")).json())
    assert [(p["name"], p["type"], p["health"]) for p in pools] == [("local", "dir", "ok")]
    assert names and sorted({v["instance"] for v in vols}) == names


async def test_a_vms_disks_are_made_and_deleted_through_their_pool(
    api: httpx.AsyncClient, image: str, platform: Platform, outside: Path
) -> None:
    """Started: the root disk is a linked clone of the image inside the pool (thin_clone)
    and an empty data disk is made there too; deleted with its disks: the volumes go."""
    (outside / "p").mkdir()
    await _pool(api, name="fast", type="shared-dir", path=str(outside / "p"), overcommit=10)
    disks = [
        {"name": "root", "image": image, "size_gib": 2, "pool": "fast"},
        {"name": "data", "size_gib": 1, "pool": "fast"},
    ]
    await create(api, "vm1", start=True, disks=disks)
    root, data = outside / "p" / "vm1" / "root.qcow2", outside / "p" / "vm1" / "data.qcow2"
    head = (await qemuimg.info(root, "qcow2"))[0]
    assert head["backing-filename"] == str(platform.settings.images_dir / "tiny.qcow2")
    assert qcow2.virtual_size(root) == 2 << 30 and qcow2.virtual_size(data) == 1 << 30
    assert not (platform.settings.disks_dir / "vm1" / "root.qcow2").exists()
    vols = (await api.get(f"{POOLS}/fast/volumes")).json()
    assert [(v["name"], v["path"]) for v in vols] == [
        ("vm1/data", str(data)),
        ("vm1/root", str(root)),
    ]
    # snapshot files live in the instance's directory: refused for pool disks, not broken
    r = await api.post("/1.0/instances/vm1/snapshots", json={"name": "s1"})
    snap = await wait_op(api, r)
    assert (snap["status"], snap["error_code"]) == ("failure", "conflict"), snap
    assert "(root, data)" in snap["error_message"] and root.exists()
    gone = {"force": "true", "disks": "true"}
    op = await wait_op(api, await api.delete("/1.0/instances/vm1", params=gone))
    assert op["status"] == "success", op
    assert not (outside / "p" / "vm1").exists()
    assert (await api.delete(f"{POOLS}/fast")).status_code == 200


async def test_growing_or_adding_disks_is_admitted_against_the_pool(
    api: httpx.AsyncClient, image: str, platform: Platform, outside: Path
) -> None:
    """A pool whose overcommit allows 2.5 GiB: a 1 GiB disk grows to 2 GiB, not to 3 GiB,
    and a second 2 GiB disk is refused there; other changes of the VM still pass."""
    st = os.statvfs(outside)
    ratio = 2.5 * (1 << 30) / (st.f_blocks * st.f_frsize)
    await _pool(api, name="small", type="dir", path=str(outside), overcommit=ratio)
    disks = [{"name": "root", "image": image}, {"name": "data", "size_gib": 1, "pool": "small"}]
    await create(api, "vm1", disks=disks)
    before = await snapshot(platform.store)
    r = await api.patch("/1.0/instances/vm1", json={"disk_sizes_gib": {"data": 3}})
    assert "small" in assert_error(r, 409, "pool_overcommitted")
    more = {"disks_add": [{"name": "more", "size_gib": 2, "pool": "small"}]}
    assert_error(await api.patch("/1.0/instances/vm1", json=more), 409, "pool_overcommitted")
    assert await snapshot(platform.store) == before
    op = await wait_op(api, await api.patch("/1.0/instances/vm1", json={"memory_mib": 128}))
    assert op["status"] == "success", op
    r = await api.patch("/1.0/instances/vm1", json={"disk_sizes_gib": {"data": 2}})
    assert (await wait_op(api, r))["status"] == "success"
    [vol] = (await api.get(f"{POOLS}/small/volumes")).json()
    assert vol["size_bytes"] == 2 << 30


async def test_shared_waits_for_every_host_to_check(
    api: httpx.AsyncClient, platform: Platform, outside: Path
) -> None:
    """With a second member that has not read the marker yet, the pool is ``unverified``
    and not shared; once that host checks it (its own view: made when it is asked), it is."""
    lease = await platform.store.grant_lease(60)
    await HostRepo(platform.store).register(HostRecord(id="host-b", name="b"), lease)
    (outside / "nfs").mkdir()
    made = await _pool(api, name="shared", type="shared-dir", path=str(outside / "nfs"))
    assert made["health"] == "unverified" and not made["capabilities"]["shared"]
    other = PoolService(platform.store, "host-b", PoolContext(outside / "b-disks"))
    seen_by_b = await other.get("shared")  # host B's first look checks the pool
    assert seen_by_b.health == "ok" and seen_by_b.capabilities.shared
    shown = (await api.get(f"{POOLS}/shared")).json()
    assert shown["health"] == "ok" and shown["capabilities"]["shared"]
    assert sorted(c["host"] for c in shown["checks"]) == sorted(
        [platform.presence.identity.id, "host-b"]
    )


async def test_a_filesystem_whose_locks_do_not_exclude_is_refused(
    api: httpx.AsyncClient, platform: Platform, outside: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lock probe fails (a filesystem without working byte locks): a shared-dir pool
    is refused as not shared, a dir pool as not usable; no marker, no record stays."""
    monkeypatch.setattr(probe, "locks_work", lambda root, tag: (False, "locks do not exclude"))
    before = await snapshot(platform.store)
    body = {"name": "nolocks", "type": "shared-dir", "path": str(outside)}
    assert "locks do not exclude" in assert_error(
        await api.post(POOLS, json=body), 409, "pool_not_shared"
    )
    assert probe.read_marker(outside) is None
    body = {**body, "type": "dir"}
    assert_error(await api.post(POOLS, json=body), 409, "conflict")
    assert await snapshot(platform.store) == before


async def test_template_clones_are_made_in_their_pool(
    api: httpx.AsyncClient, image: str, platform: Platform, outside: Path
) -> None:
    """A linked clone into a pool with thin_clone is an overlay over the template file
    there; a full clone is a copy there; both start from the pool; an unknown pool is
    refused before anything is made."""
    r = await api.post("/1.0/templates", json={"name": "tpl", "image": image})
    assert (await wait_op(api, r))["status"] == "success"
    template = Path((await api.get("/1.0/templates/tpl")).json()["path"])
    (outside / "p").mkdir()
    await _pool(api, name="fast", type="shared-dir", path=str(outside / "p"), overcommit=10)
    bad = {"names": ["lost"], "pool": "nowhere"}
    assert "nowhere" in assert_error(
        await api.post("/1.0/templates/tpl/instances", json=bad), 400, "invalid_input"
    )
    body = {"names": ["thin"], "pool": "fast", "start": True}
    op = await wait_op(api, await api.post("/1.0/templates/tpl/instances", json=body))
    assert op["status"] == "success", op
    thin = outside / "p" / "thin" / "root.qcow2"
    assert (await qemuimg.info(thin, "qcow2"))[0]["backing-filename"] == str(template)
    body = {"names": ["fat"], "pool": "fast", "clone": "full"}
    op = await wait_op(api, await api.post("/1.0/templates/tpl/instances", json=body))
    assert op["status"] == "success", op
    fat = outside / "p" / "fat" / "root.qcow2"
    assert "backing-filename" not in (await qemuimg.info(fat, "qcow2"))[0]
    assert not (platform.settings.disks_dir / "thin" / "root.qcow2").exists()
    vols = (await api.get(f"{POOLS}/fast/volumes")).json()
    assert [(v["name"], v["path"]) for v in vols] == [
        ("fat/root", str(fat)),
        ("thin/root", str(thin)),
    ]
    assert (await api.get("/1.0/instances/thin")).json()["status"]["power"] == "running"
