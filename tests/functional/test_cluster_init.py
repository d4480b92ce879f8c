"""``cluster init``: a running single host on SQLite becomes a one-member etcd cluster.

Real etcd (this host's supervised member with TLS from the new cluster CA), fake driver:
every lease-free key moves into etcd unchanged, the SQLite file is backed up, the next
start of the data directory runs on etcd with the member re-adopted, the running guest
is not started again, tokens still authenticate, ETags are etcd's (a stale one is 412),
and a second init is refused. A failed init leaves the host as it was."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import sqlite3
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from typer.testing import CliRunner

from tests.etcdlab import free_port
from tests.functional.accounts import Accounts, remote_client
from tests.functional.helpers import assert_error, create, wait_op
from tests.functional.platform import TestDriver, make_platform, serve_uds
from virtfleet.api.auth import local_admin
from virtfleet.app.bootstrap import Platform
from virtfleet.cli.main import app as cli
from virtfleet.host.clusterca import make_csr
from virtfleet.host.etcdmember import EtcdMember, load_config
from virtfleet.model.auth import Role
from virtfleet.service.jointokens import decode
from virtfleet.state import identity
from virtfleet.state.etcd import EtcdStore
from virtfleet.state.sqlite import SQLiteStore
from virtfleet.util.fingerprint import fingerprint_pem


@pytest.fixture
def data_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="vf-init-", dir="/dev/shm"))  # tmpfs: fast fsyncs
    try:
        yield path
    finally:
        _stop_member(path)
        shutil.rmtree(path, ignore_errors=True)


def _stop_member(data_dir: Path) -> None:
    """End an etcd member a test left running (it outlives its daemon by design)."""
    config = load_config(data_dir / "cluster")
    if config is not None:
        asyncio.run(EtcdMember(data_dir, config).stop())


@contextlib.asynccontextmanager
async def daemon(
    data_dir: Path, driver: TestDriver | None = None
) -> AsyncIterator[tuple[Platform, TestDriver, httpx.AsyncClient]]:
    """The daemon on ``data_dir`` (default store setting: SQLite, or the cluster's etcd
    after init), through its lifespan as ``serve`` runs it; ``driver``: the guests that
    kept running from a previous daemon."""
    platform, fresh = make_platform(data_dir, separate_audit=False, store="sqlite")
    if driver is not None:
        platform.driver = platform.agent.driver = driver
    transport = httpx.ASGITransport(app=local_admin(platform.app))
    async with (
        platform.app.router.lifespan_context(platform.app),
        httpx.AsyncClient(transport=transport, base_url="http://virtfleet") as api,
    ):
        yield platform, driver or fresh, api


async def records(store: SQLiteStore | EtcdStore) -> dict[str, bytes]:
    return {kv.key: kv.value for kv in await store.list("") if kv.lease is None}


def ports() -> dict[str, int]:
    return {"address": "127.0.0.1", "client_port": free_port(), "peer_port": free_port()}


async def test_init_moves_every_record_into_etcd_and_restarts_on_it(data_dir: Path) -> None:
    async with daemon(data_dir) as (platform, driver, api):
        accounts = Accounts(platform, api)
        token = (await accounts.mint(Role.OPERATOR))["token"]
        await accounts.aclose()
        assert (await wait_op(api, await api.post("/1.0/images", json={"name": "tiny"})))[
            "status"
        ] == "success"
        await create(api, "web", start=True)
        assert (
            await api.post("/1.0/networks", json={"name": "lan", "subnet": "10.1.0.0/24"})
        ).status_code == 201
        before_api = {
            p: (await api.get(p)).json()
            for p in ("/1.0/instances/web", "/1.0/networks/lan", "/1.0/users/otto")
        }
        old_etag = (await api.get("/1.0/instances/web")).headers["etag"]
        assert isinstance(platform.store, SQLiteStore)
        before = await records(platform.store)
        r = await api.post("/1.0/cluster/init", json=ports())
        assert r.status_code == 200, r.text
        result = r.json()
        # From now until the restart the API refuses requests: nothing writes behind the copy.
        refused = await api.get("/1.0/instances")
        member = platform.former.member if platform.former else None
        assert member is not None
        copied = EtcdStore([result["client_url"]], tls=member.tls())
        in_etcd = await records(copied)
        await copied.close()
        etcd_pid = member.pid
    assert_error(refused, 503, "store_unavailable")
    assert set(before) <= set(in_etcd) and result["keys_copied"] == len(in_etcd)
    assert result["member"] == identity.load(data_dir).name
    assert result["restarting"] is False  # in-process: the test restarts it
    backup = sqlite3.connect(result["backup"])
    rows = backup.execute("SELECT key, value FROM kv WHERE lease IS NULL").fetchall()
    backup.close()
    assert {bytes(k).decode(): bytes(v) for k, v in rows} == in_etcd  # every record, as it was

    async with daemon(data_dir, driver) as (again, _, api):
        assert isinstance(again.store, EtcdStore)
        assert again.member is not None and (again.member.adopted, again.member.pid) == (
            True,
            etcd_pid,
        )
        after_api = {p: (await api.get(p)).json() for p in before_api}
        new_etag = (await api.get("/1.0/instances/web")).headers["etag"]
        stale = await api.put(
            "/1.0/instances/web/state", json={"action": "stop"}, headers={"If-Match": old_etag}
        )
        status = (await api.get("/1.0/cluster")).json()
        async with remote_client(again, Authorization=f"Bearer {token}") as bearer:
            with_token = await bearer.get("/1.0/instances")
        second = await api.post("/1.0/cluster/init", json=ports())
        no_api = await api.post("/1.0/cluster/tokens", json={"ttl_s": 600})
        assert again.presence is not None  # the daemon sets these from its listener
        again.presence.api_url, again.presence.fingerprint = "https://127.0.0.1:8006", "CD"
        join = await api.post("/1.0/cluster/tokens", json={"ttl_s": 600})
    was, now = before_api.pop("/1.0/instances/web"), after_api.pop("/1.0/instances/web")
    assert after_api == before_api
    assert {k: v for k, v in now.items() if k != "status"} == {
        k: v for k, v in was.items() if k != "status"
    }
    assert now["status"]["reason"] == "re-adopted" and now["status"]["power"] == "running"
    assert now["status"]["pid"] == was["status"]["pid"]
    assert driver.calls.count(("start", "web")) == 1  # re-adopted, not started again
    assert old_etag != new_etag  # etcd's revisions now
    assert_error(stale, 412, "precondition_failed")
    assert with_token.status_code == 200, with_token.text
    assert (status["store"], status["summary"]) == (
        "etcd",
        "etcd cluster of 1 member (1 answering)",
    )
    assert status["members"][0]["client_urls"] == [result["client_url"]]
    assert_error(no_api, 409, "conflict")  # no TCP API to join through
    assert join.status_code == 201, join.text
    carried = decode(join.json()["token"])
    assert (carried.api_url, carried.ca_fingerprint, carried.api_fingerprint) == (
        "https://127.0.0.1:8006", result["ca_fingerprint"], "CD",
    )  # fmt: skip
    message = assert_error(second, 409, "already_clustered")
    assert message.startswith("this host is already clustered")


async def test_a_failed_init_leaves_the_single_host_as_it_was(data_dir: Path) -> None:
    """A member that cannot listen (its port taken) fails init; no cluster files remain,
    the API serves on SQLite as before."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        body = {**ports(), "client_port": taken.getsockname()[1]}
        async with daemon(data_dir) as (platform, _, api):
            r = await api.post("/1.0/cluster/init", json=body)
            after = await api.get("/1.0/instances")
            assert isinstance(platform.store, SQLiteStore)
    assert r.status_code == 502 and r.json()["error"]["code"] == "process_failed", r.text
    assert after.status_code == 200
    assert not (data_dir / "cluster").exists() and not (data_dir / "etcd").exists()


def test_cli_cluster_commands_refused_on_a_memory_store(tmp_path: Path) -> None:
    """The CLI's one-line error (the test server runs a memory store); --json too."""
    runner = CliRunner()
    with serve_uds(tmp_path) as data_dir:
        shown = runner.invoke(cli, ["--data-dir", str(data_dir), "cluster", "init", "--json"])
        token = runner.invoke(cli, ["--data-dir", str(data_dir), "cluster", "token", "create"])
        bad_ttl = runner.invoke(
            cli, ["--data-dir", str(data_dir), "cluster", "token", "create", "--ttl", "soon"]
        )
        leave = runner.invoke(cli, ["--data-dir", str(data_dir), "cluster", "leave", "--json"])
        join = runner.invoke(
            cli, ["--data-dir", str(data_dir), "cluster", "join", "http://x:1", "--token", "t"]
        )
    assert shown.exit_code != 0
    assert "cluster init and join need the embedded SQLite store" in shown.output
    assert leave.exit_code != 0 and "this host is not a cluster member" in leave.output
    assert join.exit_code != 0 and "need the embedded SQLite store" in join.output
    assert token.exit_code != 0 and "run cluster init first" in token.output
    assert bad_ttl.exit_code != 0 and "invalid duration 'soon'" in bad_ttl.output


async def test_a_joining_host_is_admitted_once_with_its_token(data_dir: Path) -> None:
    """``POST /1.0/cluster/members`` with no account: a wrong token, a taken host name
    and colliding instance names are refused with nothing changed (the token still
    works after); then the joiner's certificate is signed by the CA, its etcd member
    added as a learner, and the token is used up."""
    async with daemon(data_dir) as (_, _, api):
        await wait_op(api, await api.post("/1.0/images", json={"name": "tiny"}))
        await create(api, "web")
        result = (await api.post("/1.0/cluster/init", json=ports())).json()
    async with daemon(data_dir) as (again, _, api):
        assert again.presence is not None and isinstance(again.store, EtcdStore)
        again.presence.api_url = "http://127.0.0.1:8006"
        secret = decode((await api.post("/1.0/cluster/tokens", json={})).json()["token"]).secret
        key = ec.generate_private_key(ec.SECP256R1())
        peer = f"https://127.0.0.1:{free_port()}"
        ask = {
            "secret": secret,
            "name": "host-b",
            "peer_url": peer,
            "csr": make_csr(key, "host-b").decode(),
        }
        async with remote_client(again) as anon:  # no credentials: the token is one
            wrong = await anon.post("/1.0/cluster/members", json={**ask, "secret": "nope"})
            named = await anon.post(
                "/1.0/cluster/members", json={**ask, "name": identity.load(data_dir).name}
            )
            taken = await anon.post(
                "/1.0/cluster/members", json={**ask, "instances": ["db", "web"]}
            )
            members_before = len(await again.store.members())
            admitted = await anon.post("/1.0/cluster/members", json={**ask, "instances": ["db"]})
            reused = await anon.post("/1.0/cluster/members", json=ask)
        members_after = await again.store.members()
    assert "wrong, expired or already used" in assert_error(wrong, 401, "unauthenticated")
    assert "is already a member" in assert_error(named, 409, "already_exists")
    assert assert_error(taken, 409, "already_exists") == (
        "instances named web already exist in the cluster: join with --rename-suffix or "
        "rename them first"
    )
    assert members_before == 1
    assert admitted.status_code == 200, admitted.text
    grant = admitted.json()
    ca = x509.load_pem_x509_certificate(grant["ca_cert"].encode())
    assert fingerprint_pem(grant["ca_cert"]) == result["ca_fingerprint"]
    cert = x509.load_pem_x509_certificate(grant["cert"].encode())
    cert.verify_directly_issued_by(ca)
    assert cert.public_key() == key.public_key()
    assert f"host-b={peer}" in grant["initial_cluster"].split(",")
    assert grant["client_urls"] == [result["client_url"]]
    assert len(members_after) == 2 and grant["member_id"] in {m.id for m in members_after}
    assert_error(reused, 401, "unauthenticated")
