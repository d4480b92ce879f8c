"""``cluster join``: a second single host (its own data dir, its own etcd member on
loopback, fake driver, a running guest) joins a cluster formed by ``cluster init`` on
the first, whose API it reaches over TLS pinned as the token says. A wrong token is
refused by the cluster and a token naming another certificate by the joiner, with
nothing changed on either side (the real token still works after), and so are names the
cluster has (without --rename-suffix; with it for a running guest, or when NAME+suffix is
taken too or invalid); then the join brings the guests in (the stopped one whose name
the cluster has renamed NAME+suffix, its disk directory too) — both members list them,
owned by the joiner — and the joiner restarts on etcd with its member re-adopted.
Leaving is refused while the joiner owns the guest (named); once it is gone the joiner
leaves and starts again as a single host; the last member cannot leave."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from tests.etcdlab import free_port
from tests.functional.helpers import act, assert_error, create, wait_op
from tests.functional.platform import make_platform
from tests.functional.test_cluster_init import daemon, ports
from tests.threaded_server import in_thread
from virtfleet.api.auth import local_admin
from virtfleet.app.tls import server_certificate
from virtfleet.client.tls import pinned_context
from virtfleet.host.etcdmember import EtcdMember, load_config
from virtfleet.model.cluster import JoinToken
from virtfleet.service.jointokens import decode
from virtfleet.state import identity
from virtfleet.state.etcd import EtcdStore


@pytest.fixture
def two_dirs() -> Iterator[tuple[Path, Path]]:
    root = Path(tempfile.mkdtemp(prefix="vf-join-", dir="/dev/shm"))  # tmpfs: fast fsyncs
    try:
        yield root / "a", root / "b"
    finally:
        for each in (root / "b", root / "a"):
            config = load_config(each / "cluster")
            if config is not None:
                asyncio.run(EtcdMember(each, config).stop())
        shutil.rmtree(root, ignore_errors=True)


async def test_a_host_with_a_guest_joins_a_cluster(two_dirs: tuple[Path, Path]) -> None:
    dir_a, dir_b = two_dirs
    identity.load_or_create(dir_a, "host-a")
    identity.load_or_create(dir_b, "host-b")
    async with daemon(dir_a) as (_, _, api):
        assert (await api.post("/1.0/cluster/init", json=ports())).status_code == 200
    # Host A restarted on etcd, its API on TCP for the joining host to reach.
    platform_a, _ = make_platform(dir_a, separate_audit=False, store="sqlite")
    port = free_port()
    url = f"https://127.0.0.1:{port}"
    cert = server_certificate(dir_a / "tls", None, None, ["127.0.0.1"])
    assert platform_a.presence is not None
    platform_a.presence.api_url, platform_a.presence.fingerprint = url, cert.fingerprint
    config = uvicorn.Config(
        local_admin(platform_a.app), host="127.0.0.1", port=port, log_level="warning",
        lifespan="on", ssl_certfile=str(cert.cert), ssl_keyfile=str(cert.key),
    )  # fmt: skip
    server = uvicorn.Server(config)
    with in_thread(server, server.run, "host-a"):
        async with httpx.AsyncClient(
            base_url=url, verify=pinned_context(cert.fingerprint)
        ) as api_a:
            token = (await api_a.post("/1.0/cluster/tokens", json={})).json()["token"]
            await wait_op(api_a, await api_a.post("/1.0/images", json={"name": "tiny"}))
            for taken in ("web", "web-b", "db"):  # the cluster's names B's guests meet
                await create(api_a, taken)
            async with daemon(dir_b) as (_, driver_b, api_b):
                await wait_op(api_b, await api_b.post("/1.0/images", json={"name": "tiny"}))
                await create(api_b, "db", start=True)
                await create(api_b, "web", start=True)  # its disk files are made
                await act(api_b, "web", "stop")
                carried = decode(token)
                forged = JoinToken(**{**carried.model_dump(), "secret": "guess"}).encode()
                body = {"url": url, **ports()}
                wrong = await api_b.post("/1.0/cluster/join", json={**body, "token": forged})
                other = JoinToken(**{**carried.model_dump(), "api_fingerprint": "AA:" * 31 + "AA"})
                pinned = await api_b.post(
                    "/1.0/cluster/join", json={**body, "token": other.encode()}
                )
                real = {**body, "token": token}
                collides = await api_b.post("/1.0/cluster/join", json=real)
                renamed_running = await api_b.post(
                    "/1.0/cluster/join", json={**real, "rename_suffix": "-2"}
                )  # db runs here and is taken there
                await wait_op(api_a, await api_a.delete("/1.0/instances/db"))
                clash = await api_b.post("/1.0/cluster/join", json={**real, "rename_suffix": "-b"})
                invalid = await api_b.post(
                    "/1.0/cluster/join", json={**real, "rename_suffix": "/x"}
                )
                untouched = not (dir_b / "cluster").exists()
                kept_name = (dir_b / "disks" / "web").is_dir()
                joined = await api_b.post("/1.0/cluster/join", json={**real, "rename_suffix": "-2"})
            async with daemon(dir_b, driver_b) as (platform_b, _, api_b):
                assert isinstance(platform_b.store, EtcdStore)
                assert platform_b.member is not None and platform_b.member.adopted
                on_b = (await api_b.get("/1.0/instances/db")).json()
                on_a = (await api_a.get("/1.0/instances/db")).json()
                web_2 = (await api_a.get("/1.0/instances/web-2")).json()
                web = (await api_a.get("/1.0/instances/web")).json()
                moved = (dir_b / "disks" / "web-2").is_dir() and not (
                    dir_b / "disks" / "web"
                ).exists()
                hosts = sorted(h["name"] for h in (await api_a.get("/1.0/hosts")).json())
                members = (await api_a.get("/1.0/cluster")).json()["members"]
                owning = await api_b.post("/1.0/cluster/leave")
                for name in ("db", "web-2"):
                    await wait_op(
                        api_b,
                        await api_b.delete(f"/1.0/instances/{name}", params={"force": "true"}),
                    )
                left = await api_b.post("/1.0/cluster/leave")
            after_leave = (await api_a.get("/1.0/cluster")).json()
            for name in ("web", "web-b"):  # A's own: the last member's check is the one seen
                await wait_op(api_a, await api_a.delete(f"/1.0/instances/{name}"))
            last = await api_a.post("/1.0/cluster/leave")
        async with daemon(dir_b) as (_, _, api_b):
            alone = (await api_b.get("/1.0/cluster")).json()
    assert "wrong, expired or already used" in assert_error(wrong, 401, "unauthenticated")
    assert "presents a certificate other than the token's" in assert_error(pinned, 409, "conflict")
    assert "instances named db, web already exist in the cluster" in assert_error(
        collides, 409, "already_exists"
    )
    assert assert_error(renamed_running, 409, "conflict") == (
        "the cluster refused the join: instances db run on the joining host and their names "
        "are taken in the cluster: stop them to join with --rename-suffix"
    )
    assert "the renamed instances web-b would collide too" in assert_error(
        clash, 409, "already_exists"
    )
    assert "rename suffix" in assert_error(invalid, 400, "invalid_name")
    assert untouched and kept_name
    assert joined.status_code == 200, joined.text
    assert joined.json()["instances"] == ["db", "web-2"]
    assert joined.json()["renamed"] == {"web": "web-2"}
    assert web_2["owner"]["host"] == identity.load(dir_b).id and web_2["name"] == "web-2"
    assert web["owner"]["host"] != web_2["owner"]["host"]  # the cluster's own web stays
    assert web_2["status"]["power"] == "stopped" and moved
    b_id = identity.load(dir_b).id
    assert on_b["status"]["power"] == "running" and on_b["status"]["reason"] == "re-adopted"
    assert on_a["owner"]["host"] == b_id
    assert driver_b.calls.count(("start", "db")) == 1  # not started again
    assert hosts == ["host-a", "host-b"]
    assert sorted(m["name"] for m in members) == ["host-a", "host-b"]
    assert all(m["error"] is None for m in members)
    assert assert_error(owning, 409, "in_use") == (
        "this host owns instances db, web-2: move or delete them first"
    )
    assert left.status_code == 200, left.text
    assert Path(left.json()["kept"]).exists() and not (dir_b / "cluster").exists()
    assert [m["name"] for m in after_leave["members"]] == ["host-a"]
    assert [h["name"] for h in after_leave["hosts"]] == ["host-a"]
    assert "only etcd member" in assert_error(last, 409, "conflict")
    assert alone["store"] == "sqlite" and [h["name"] for h in alone["hosts"]] == ["host-b"]
