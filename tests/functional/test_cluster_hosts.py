"""What the Hosts page shows, from ``GET /1.0/cluster``: each host's capacity, the
instances it owns (and runs), what they hold as placement counts it, and the health of
the etcd member it runs. A second host is a record with a lease in the same store (no
daemon of its own: nothing carries out what it is asked to run)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from tests.functional.helpers import create, wait_op
from tests.functional.platform import FACTS, make_platform, running
from virtfleet.api.auth import local_admin
from virtfleet.app.bootstrap import Platform
from virtfleet.model.cluster import StoreMember
from virtfleet.model.host import HostCapacity, HostRecord
from virtfleet.model.instance import DesiredPower, DesiredState
from virtfleet.service.cluster import ClusterService
from virtfleet.state import identity
from virtfleet.state.hosts import HostRepo
from virtfleet.state.keys import image_file_key
from virtfleet.state.repos import InstanceRepo
from virtfleet.state.store import StateStore
from virtfleet.storage.imagefiles import ImageFiles

FAR = HostRecord(
    id="5b7c5a0e-0000-4000-8000-0000000000fa",
    name="far",
    facts=FACTS,
    capacity=HostCapacity(cpus=8, memory_mib=16384, vcpus_limit=32, memory_limit_mib=32768),
)


async def _far_holds_tiny(store: StateStore) -> None:
    """``far`` holds the tiny image's file, as after its own fetch: creates placed on it
    need no fetch (``far`` has no API that could answer one)."""
    (here,) = await ImageFiles(store, Path("/")).locations("tiny")
    there = here.model_copy(update={"host": FAR.id})
    await store.put(image_file_key("tiny", FAR.id), there.model_dump_json().encode())


async def _status(api: httpx.AsyncClient) -> dict[str, Any]:
    r = await api.get("/1.0/cluster")
    assert r.status_code == 200, r.text
    found: dict[str, Any] = r.json()
    return found


@contextlib.asynccontextmanager
async def _api(platform: Platform, image: bool = True) -> AsyncIterator[httpx.AsyncClient]:
    """The started platform's local-root client, with the ``tiny`` image built."""
    transport = httpx.ASGITransport(app=local_admin(platform.app))
    async with (
        running(platform),
        httpx.AsyncClient(transport=transport, base_url="http://virtfleet") as api,
    ):
        if image:
            built = await wait_op(api, await api.post("/1.0/images", json={"name": "tiny"}))
            assert built["status"] == "success", built
        yield api


async def test_a_single_host_shows_its_capacity_and_instances(tmp_path: Path) -> None:
    """One host: its capacity limits as its record has them, two instances of which one
    runs, and only the running one's vCPUs and memory allocated; no etcd member."""
    platform, _ = make_platform(tmp_path)
    async with _api(platform) as api:
        await create(api, "web", start=True, vcpus=2, memory_mib=512)
        await create(api, "idle", vcpus=1, memory_mib=256)
        (record,) = (await api.get("/1.0/hosts")).json()
        found = await _status(api)
    (me,) = found["hosts"]
    assert me["id"] == identity.load(tmp_path).id and me["this_host"] is True
    assert me["capacity"] == record["capacity"] and me["capacity"]["vcpus_limit"] == 64
    counted = {
        k: me[k] for k in ("instances", "running", "allocated_vcpus", "allocated_memory_mib")
    }
    assert counted == {"instances": 2, "running": 1, "allocated_vcpus": 2,
                       "allocated_memory_mib": 512}  # fmt: skip
    assert me["etcd"] is None and me["versions"]["virtfleet"]
    assert me["disks"][0]["path"] == str(tmp_path)
    assert found["instances"] == 2


async def test_two_hosts_each_count_what_they_own(tmp_path: Path) -> None:
    """A second host with two instances (one asked to run, never carried out): each host
    counts its own, the one asked to run is allocated on ``far``; once ``far``'s lease is
    gone it is offline with no lease age and still counts what it owns; an instance whose
    owner is no listed host counts in the cluster's total only."""
    platform, _ = make_platform(tmp_path)
    store = platform.store
    async with _api(platform) as api:
        lease = await store.grant_lease(60.0)
        await HostRepo(store).register(FAR, lease)
        await _far_holds_tiny(store)
        await create(api, "web", start=True, vcpus=2, memory_mib=512)
        await create(api, "remote", host="far", vcpus=3, memory_mib=1024)
        await create(api, "remote-off", host=FAR.id, vcpus=4, memory_mib=2048)
        repo = InstanceRepo(store)
        await repo.put_desired("remote", DesiredState(power=DesiredPower.RUNNING, generation=2))
        await create(api, "stray")
        _, revision = await repo.owner("stray")
        await repo.move_owner("stray", "0e1d0000-0000-4000-8000-00000000dead", revision)
        online = {h["name"]: h for h in (await _status(api))["hosts"]}
        await store.revoke(lease)
        after = await _status(api)
    mine = identity.load(tmp_path).name

    def counts(h: dict[str, Any]) -> tuple[int, int, int, int]:
        return h["instances"], h["running"], h["allocated_vcpus"], h["allocated_memory_mib"]

    assert counts(online[mine]) == (1, 1, 2, 512)
    assert counts(online["far"]) == (2, 0, 3, 1024)
    assert online["far"]["capacity"] == FAR.capacity.model_dump()
    assert online["far"]["state"] == "online" and online["far"]["lease_age_s"] >= 0
    offline = {h["name"]: h for h in after["hosts"]}["far"]
    assert (offline["state"], offline["alive"], offline["lease_age_s"]) == ("offline", False, None)
    assert counts(offline) == (2, 0, 3, 1024)
    assert after["instances"] == 4


async def test_each_host_shows_the_health_of_its_etcd_member(tmp_path: Path) -> None:
    """The etcd member named like a host is that host's: the leader, a member that does not
    answer (with why), and a host that runs no member (an external etcd: none)."""
    members = [
        StoreMember(id="a1", name="far", leader=True, version="3.4.23", raft_index=9),
        StoreMember(id="b2", name="near", error="etcd is unavailable: connection refused"),
        StoreMember(id="c3", name="elsewhere", version="3.4.23"),
    ]

    async def listed() -> list[StoreMember]:
        return members

    platform, _ = make_platform(tmp_path)
    async with _api(platform, image=False) as api:
        lease = await platform.store.grant_lease(60.0)
        for record in (FAR, FAR.model_copy(update={"id": FAR.id[:-2] + "ee", "name": "near"})):
            await HostRepo(platform.store).register(record, lease)
        me = identity.load(tmp_path)
        platform.services.cluster = ClusterService(platform.store, me.id, "etcd", listed)
        found = await _status(api)
    etcd = {h["name"]: h["etcd"] for h in found["hosts"]}
    assert etcd["far"]["leader"] is True and etcd["far"]["error"] is None
    assert etcd["near"]["error"] == "etcd is unavailable: connection refused"
    assert etcd[me.name] is None
    assert found["summary"] == "etcd cluster of 3 members (2 answering)"
