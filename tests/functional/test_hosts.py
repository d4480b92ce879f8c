"""Host identity and host records: a persistent id from the data directory (never its
path), ``/hosts/{id}`` with a liveness key on a lease, ``GET /1.0/hosts``, and the CLI."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from tests.functional.helpers import assert_error
from tests.functional.platform import FACTS, make_platform, running, serve_uds
from virtfleet.api.auth import local_admin
from virtfleet.app.bootstrap import Platform
from virtfleet.cli.main import app
from virtfleet.errors import InvalidInputError
from virtfleet.host.member import HostPresence
from virtfleet.model.capacity import OvercommitRatios
from virtfleet.model.host import HostRecord
from virtfleet.state import identity
from virtfleet.state.hosts import HostRepo
from virtfleet.state.keys import alive_key


async def _hosts(platform: Platform) -> list[dict[str, object]]:
    transport = httpx.ASGITransport(app=local_admin(platform.app))
    async with httpx.AsyncClient(transport=transport, base_url="http://virtfleet") as api:
        r = await api.get("/1.0/hosts")
    assert r.status_code == 200, r.text
    return list(r.json())


async def test_identity_survives_restarts_and_copies_not_paths(tmp_path: Path) -> None:
    """The daemon makes host.json once: a restart keeps the id, a copy of the data
    directory elsewhere keeps it too (not derived from the path), a new directory gets a
    new one; the store's host record carries it."""
    for name in ("a", "new"):
        (tmp_path / name).mkdir()
    first, _ = make_platform(tmp_path / "a")
    async with running(first):
        (before,) = await _hosts(first)
    again, _ = make_platform(tmp_path / "a")
    async with running(again):
        (after,) = await _hosts(again)
    shutil.copytree(tmp_path / "a", tmp_path / "elsewhere", ignore=shutil.ignore_patterns("*.sock"))
    copied, _ = make_platform(tmp_path / "elsewhere")
    async with running(copied):
        (moved,) = await _hosts(copied)
    fresh, _ = make_platform(tmp_path / "new")
    async with running(fresh):
        (new,) = await _hosts(fresh)
    stored = json.loads((tmp_path / "a" / "host.json").read_text())
    assert before["id"] == after["id"] == moved["id"] == stored["id"]
    assert new["id"] != before["id"]
    assert before["state"] == "online" and before["alive"] is True
    assert before["name"] == identity.default_name()


def test_identity_file_rules(tmp_path: Path) -> None:
    """A name given at first run names the host; later runs keep the stored one (``rename``
    changes it, same id); a damaged file is an error, never silently replaced."""
    made = identity.load_or_create(tmp_path, "rack1-a")
    assert identity.load_or_create(tmp_path, "other") == made and made.name == "rack1-a"
    renamed = identity.rename(tmp_path, "rack1-b")
    assert (renamed.id, renamed.name) == (made.id, "rack1-b")
    assert identity.load(tmp_path) == renamed
    assert [p.name for p in tmp_path.iterdir()] == ["host.json"]  # no temporary files left
    (tmp_path / "host.json").write_text("{not json")
    with pytest.raises(InvalidInputError):
        identity.load_or_create(tmp_path)


async def test_a_host_whose_lease_lapsed_is_offline(tmp_path: Path) -> None:
    """Another host registered with a short lease and then stopped renewing: once its
    lease lapses it is listed offline; this host, renewing, stays online past its TTL."""
    platform, _ = make_platform(tmp_path)
    async with running(platform):
        store, revision = platform.store, await platform.store.revision()
        other = HostRecord(id="5b7c5a0e-0000-4000-8000-000000000001", name="gone", facts=FACTS)
        lease = await store.grant_lease(3.0)
        await HostRepo(store).register(other, lease)
        await store.keepalive(lease)  # renewed once, then never again
        listed = {h["name"]: h["state"] for h in await _hosts(platform)}
        async for change in store.watch(alive_key(other.id), revision):
            if change.type == "delete":
                break  # the lease lapsed: its liveness key went with it
        lapsed = {h["name"]: (h["state"], h["alive"]) for h in await _hosts(platform)}
    mine = identity.default_name()
    assert listed == {"gone": "online", mine: "online"}
    assert lapsed == {"gone": ("offline", False), mine: ("online", True)}


async def test_the_member_renews_and_registers_again(tmp_path: Path) -> None:
    """The member keeps its lease alive beyond the TTL, and a lease lost anyway (revoked
    behind its back) is granted again with the record rewritten."""
    platform, _ = make_platform(tmp_path)
    member = HostPresence(
        platform.store, identity.load_or_create(tmp_path), FACTS, OvercommitRatios(), tmp_path,
        ttl_s=0.3,
    )  # fmt: skip
    repo = HostRepo(platform.store)
    await member.start()
    try:
        await asyncio.sleep(0.9)  # three TTLs: only renewals keep it alive
        renewed = await repo.is_alive(member.identity.id)
        revision = await platform.store.revision()
        assert member.lease is not None
        await platform.store.revoke(member.lease)
        async for change in platform.store.watch(alive_key(member.identity.id), revision):
            if change.type == "put":
                break  # registered again
        back = await repo.get(member.identity.id)
    finally:
        await member.stop()
    assert renewed and back.alive and back.state.value == "online"
    assert not await repo.is_alive(member.identity.id)  # stop revoked it: offline at once


async def test_get_one_host_by_id_or_name(tmp_path: Path) -> None:
    """``GET /1.0/hosts/{id-or-name}`` finds the host either way; an unknown one is a 404."""
    platform, _ = make_platform(tmp_path)
    transport = httpx.ASGITransport(app=local_admin(platform.app))
    async with (
        running(platform),
        httpx.AsyncClient(transport=transport, base_url="http://virtfleet") as api,
    ):
        me = identity.load_or_create(tmp_path)
        by_id = (await api.get(f"/1.0/hosts/{me.id}")).json()
        by_name = (await api.get(f"/1.0/hosts/{me.name}")).json()
        missing = await api.get("/1.0/hosts/nowhere")
    assert by_id == by_name and by_id["id"] == me.id
    assert by_id["capacity"]["cpus"] == FACTS.cpus and by_id["facts"]["qemu_version"] == "9.2.0"
    assert_error(missing, 404, "not_found")


def test_cli_host_list_and_show(tmp_path: Path) -> None:
    """``host list`` and ``host show NAME`` (table and --json) over the daemon's socket."""
    runner = CliRunner()
    with serve_uds(tmp_path) as data_dir:
        me = identity.load_or_create(data_dir)
        base = ["--data-dir", str(data_dir), "host"]
        table = runner.invoke(app, [*base, "list"])
        listed = runner.invoke(app, [*base, "list", "--json"])
        shown = runner.invoke(app, [*base, "show", me.name, "--json"])
        missing = runner.invoke(app, [*base, "show", "nowhere"])
    assert table.exit_code == 0, table.output
    assert me.id in table.output and "online" in table.output
    assert [h["id"] for h in json.loads(listed.output)] == [me.id]
    assert json.loads(shown.output)["name"] == me.name
    assert missing.exit_code != 0 and "not_found" in missing.output
