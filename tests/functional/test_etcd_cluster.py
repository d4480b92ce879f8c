"""Two daemons (two host ids, two data directories) on one real etcd: each lists the
other, an instance made through one shows its owner on the other, a power action through
the non-owner is carried out by the owner's agent (desired state in the store), a door
call (a snapshot) through a non-owner cannot reach an owner without a network API (503
naming it: tests/functional/test_forwarding.py forwards over HTTPS), and
``GET /1.0/cluster`` / ``virtfleet cluster status`` describe the store and the hosts."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
from typer.testing import CliRunner

from tests.etcdlab import ETCD, EtcdMember, etcd_lab, free_port
from tests.functional.helpers import act, assert_error, create, wait_op
from tests.functional.platform import TestDriver, make_platform, running, serve_uds
from virtfleet.api.auth import local_admin
from virtfleet.app.bootstrap import Platform
from virtfleet.cli.main import app
from virtfleet.model.cluster import StoreMember
from virtfleet.service.cluster import ClusterService
from virtfleet.state import identity
from virtfleet.state.etcd import EtcdStore


@contextlib.asynccontextmanager
async def member(tmp: Path, name: str, store: str) -> AsyncIterator[
    tuple[Platform, TestDriver, httpx.AsyncClient]
]:  # fmt: skip
    """One daemon named ``name`` on ``store``, started, with a local-root client."""
    identity.load_or_create(tmp / name, name)  # its name, before the daemon makes one
    platform, driver = make_platform(tmp / name, store=store)
    transport = httpx.ASGITransport(app=local_admin(platform.app))
    async with (
        running(platform),
        httpx.AsyncClient(transport=transport, base_url="http://virtfleet") as api,
    ):
        yield platform, driver, api


async def test_two_daemons_on_one_etcd(tmp_path: Path) -> None:
    with etcd_lab() as etcd:
        store = f"etcd+{etcd.url}"
        async with (
            member(tmp_path, "host-a", store) as (_, driver_a, api_a),
            member(tmp_path, "host-b", store) as (_, driver_b, api_b),
        ):
            a_id = identity.load(tmp_path / "host-a").id
            b_id = identity.load(tmp_path / "host-b").id
            seen_by_a = {h["name"]: h["state"] for h in (await api_a.get("/1.0/hosts")).json()}
            seen_by_b = {h["name"]: h["state"] for h in (await api_b.get("/1.0/hosts")).json()}
            image = await wait_op(api_a, await api_a.post("/1.0/images", json={"name": "tiny"}))
            assert image["status"] == "success", image
            await create(api_a, "web", start=True)
            on_b = (await api_b.get("/1.0/instances/web")).json()
            stopped = await act(api_b, "web", "stop")  # through B; A owns it
            # A door call (files and processes on the owner): A serves no network API here.
            snap_b = await api_b.post("/1.0/instances/web/snapshots", json={"name": "s1"})
            snap_a = await wait_op(
                api_a, await api_a.post("/1.0/instances/web/snapshots", json={"name": "s1"})
            )
            after = (await api_a.get("/1.0/instances/web")).json()
            cluster = (await api_b.get("/1.0/cluster")).json()
    assert seen_by_a == seen_by_b == {"host-a": "online", "host-b": "online"}
    assert on_b["owner"]["host"] == a_id
    assert stopped["status"] == "success", stopped
    assert after["status"]["power"] == "stopped" and after["status"]["host"] == a_id
    assert ("stop", "web") in driver_a.calls
    assert not [call for call in driver_b.calls if call[1] == "web"]  # B never touched it
    assert assert_error(snap_b, 503, "owner_unreachable") == (
        f"instance 'web' is owned by host host-a ({a_id}), which cannot be reached: "
        "it has no network API"
    )
    assert snap_a["status"] == "success", snap_a
    assert cluster["store"] == "etcd" and cluster["host_id"] == b_id
    assert cluster["summary"] == "etcd cluster of 1 member (1 answering)"
    (etcd_member,) = cluster["members"]
    assert etcd_member["client_urls"] == [etcd.url] and etcd_member["leader"] is True
    assert etcd_member["version"].startswith("3.") and etcd_member["raft_index"] > 0
    assert etcd_member["db_size_bytes"] > 0 and etcd_member["error"] is None
    hosts = {h["name"]: h for h in cluster["hosts"]}
    assert (hosts["host-a"]["this_host"], hosts["host-b"]["this_host"]) == (False, True)
    assert all(h["alive"] and h["lease_age_s"] >= 0 for h in hosts.values())


async def test_cluster_status_names_a_member_that_does_not_answer(tmp_path: Path) -> None:
    """With etcd gone, the cluster view is 503 ``store_unavailable`` (no quorum to ask)."""
    with etcd_lab() as etcd:
        async with member(tmp_path, "host-a", f"etcd+{etcd.url}") as (_, _, api):
            etcd.stop()
            r = await api.get("/1.0/cluster")
            etcd.start()
    assert r.status_code == 503 and r.json()["error"]["code"] == "store_unavailable"


async def test_on_sqlite_the_cluster_is_this_single_host(tmp_path: Path) -> None:
    async with member(tmp_path, "solo", "sqlite") as (_, _, api):
        found = (await api.get("/1.0/cluster")).json()
    me = identity.load(tmp_path / "solo")
    assert (found["store"], found["summary"]) == ("sqlite", "single host (embedded SQLite)")
    assert (found["host_id"], found["members"]) == (me.id, [])
    assert [(h["id"], h["this_host"], h["state"]) for h in found["hosts"]] == [
        (me.id, True, "online")
    ]


def test_cli_cluster_status(tmp_path: Path) -> None:
    """``cluster status``: the store's summary and this host (table and --json)."""
    runner = CliRunner()
    with serve_uds(tmp_path) as data_dir:
        me = identity.load_or_create(data_dir)
        table = runner.invoke(app, ["--data-dir", str(data_dir), "cluster", "status"])
        shown = runner.invoke(app, ["--data-dir", str(data_dir), "cluster", "status", "--json"])
    assert table.exit_code == 0, table.output
    assert "single host (memory store)" in table.output and "this host" in table.output
    assert me.id in table.output
    found = json.loads(shown.output)
    assert (found["store"], found["host_id"]) == ("memory", me.id)
    assert [h["name"] for h in found["hosts"]] == [me.name]


def test_cli_cluster_status_shows_etcd_members(tmp_path: Path) -> None:
    """The members table: the leader, db size, raft index and version; a member that does
    not answer says why (the members as ``EtcdStore.members`` reports them)."""
    members = [
        StoreMember(id="a1", name="m1", client_urls=["https://10.0.0.1:2379"], leader=True,
                    db_size_bytes=3 * 2**20, raft_index=812, version="3.4.23"),
        StoreMember(id="b2", name="m2", client_urls=["https://10.0.0.2:2379"],
                    error="etcd is unavailable: connection refused"),
    ]  # fmt: skip

    async def listed() -> list[StoreMember]:
        return members

    def as_etcd(platform: Platform) -> None:
        me = identity.load_or_create(platform.settings.data_dir).id
        platform.services.cluster = ClusterService(platform.store, me, "etcd", listed)

    with serve_uds(tmp_path, setup=as_etcd) as data_dir:
        args = ["--data-dir", str(data_dir), "cluster", "status"]
        table = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert table.exit_code == 0, table.output
    lines = [" ".join(line.split()) for line in table.output.splitlines()]
    assert "store etcd cluster of 2 members (1 answering)" in lines
    assert "m1 https://10.0.0.1:2379 yes 3.0 MiB 812 3.4.23" in lines
    down = "m2 https://10.0.0.2:2379 - - - unreachable: etcd is unavailable: connection refused"
    assert down in lines


async def test_remove_forgets_a_dead_host_and_its_etcd_member(tmp_path: Path) -> None:
    """``DELETE /1.0/cluster/hosts/B?force=true`` (``cluster remove B --force``): refused
    without force, for this host and while B is online; then B's record goes, its etcd
    member (a learner named host-b here: it needs no quorum) is removed, and the instance
    B owned stays listed as orphaned."""
    with etcd_lab() as etcd:
        store = f"etcd+{etcd.url}"
        async with member(tmp_path, "host-a", store) as (platform_a, _, api_a):
            async with member(tmp_path, "host-b", store) as (_, _, api_b):
                await wait_op(api_b, await api_b.post("/1.0/images", json={"name": "tiny"}))
                await create(api_b, "on-b", host="host-b")  # placement could pick A
                online = await api_a.delete("/1.0/cluster/hosts/host-b", params={"force": "true"})
            etcd_store = platform_a.store
            assert isinstance(etcd_store, EtcdStore)
            await dead_learner(etcd_store, etcd, tmp_path / "etcd-b")  # host-b's member, down
            names_before = sorted(m.name for m in await etcd_store.members())
            unforced = await api_a.delete("/1.0/cluster/hosts/host-b")
            itself = await api_a.delete("/1.0/cluster/hosts/host-a", params={"force": "true"})
            removed = await api_a.delete("/1.0/cluster/hosts/host-b", params={"force": "true"})
            hosts = [h["name"] for h in (await api_a.get("/1.0/hosts")).json()]
            members_after = await etcd_store.members()
            again = await api_a.delete("/1.0/cluster/hosts/host-b", params={"force": "true"})
    assert assert_error(online, 409, "conflict") == (
        "host 'host-b' is online: stop its daemon or run cluster leave there"
    )
    assert assert_error(unforced, 400, "invalid_input").endswith("pass force")
    assert assert_error(itself, 409, "conflict") == "host 'host-a' is this host: use cluster leave"
    assert removed.status_code == 200, removed.text
    assert removed.json()["orphaned"] == ["on-b"] and removed.json()["name"] == "host-b"
    assert hosts == ["host-a"]
    assert_error(again, 404, "not_found")
    assert names_before == ["host-b", "t"] and [m.name for m in members_after] == ["t"]


async def dead_learner(store: EtcdStore, etcd: EtcdMember, data: Path) -> None:
    """Add an etcd learner named host-b (no quorum needed), start it until it answers,
    then stop it: the etcd member of a host that died."""
    peer = f"http://127.0.0.1:{free_port()}"
    client = f"http://127.0.0.1:{free_port()}"
    await store.add_learner("host-b", [peer])
    args = [
        ETCD, "--name", "host-b", "--data-dir", str(data),
        "--listen-client-urls", client, "--advertise-client-urls", client,
        "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
        "--initial-cluster", f"t=http://127.0.0.1:{etcd.peer},host-b={peer}",
        "--initial-cluster-state", "existing",
        "--heartbeat-interval", "25", "--election-timeout", "250",
    ]  # fmt: skip
    with (data.parent / "etcd-b.log").open("ab") as log:
        proc = await asyncio.create_subprocess_exec(*args, stdout=log, stderr=subprocess.STDOUT)
    try:
        async with asyncio.timeout(20):
            while "host-b" not in [m.name for m in await store.members()]:
                await asyncio.sleep(0.05)  # poll: etcd names a member once it started
    finally:
        proc.terminate()
        await proc.wait()


def test_cli_cluster_remove_refuses_in_one_line(tmp_path: Path) -> None:
    """``cluster remove``: an unknown host and this host are refused (table and --json)."""
    runner = CliRunner()
    with serve_uds(tmp_path) as data_dir:
        me = identity.load_or_create(data_dir)
        base = ["--data-dir", str(data_dir), "cluster", "remove"]
        unknown = runner.invoke(app, [*base, "nosuch", "--force"])
        itself = runner.invoke(app, [*base, me.name, "--force", "--json"])
    assert unknown.exit_code != 0 and "host 'nosuch' not found" in unknown.output
    assert itself.exit_code != 0 and "is this host: use cluster leave" in itself.output
