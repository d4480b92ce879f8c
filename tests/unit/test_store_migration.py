"""Schema migrations of the SQLite state file (state/migrations.py), on the committed
data directories written by schema versions 1, 3 and 4 (tests/fixtures/datadir-v1, -v3,
-v4)."""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.functional.platform import FACTS
from virtfleet.app.bootstrap import boot_id_of
from virtfleet.app.settings import Settings
from virtfleet.cli.main import app
from virtfleet.errors import SchemaTooNewError, VirtfleetError
from virtfleet.model.auth import TokenRecord, UserRecord
from virtfleet.model.backup import Schedule
from virtfleet.model.boot import BootReport
from virtfleet.model.event import Event
from virtfleet.model.host import HostRecord
from virtfleet.model.instance import Ownership
from virtfleet.model.metrics import AlertRule
from virtfleet.model.operation import Operation
from virtfleet.state import identity, migrations
from virtfleet.state.networks import NetworkRepo
from virtfleet.state.repos import InstanceRepo
from virtfleet.state.sqlite import SQLiteStore
from virtfleet.storage.images import ImageRecord

FIXTURES = Path(__file__).parents[1] / "fixtures"
FIXTURE = FIXTURES / "datadir-v1" / "virtfleet.db"
FIXTURE_V3 = FIXTURES / "datadir-v3"
FIXTURE_V4 = FIXTURES / "datadir-v4"
# Schema 4: what belongs to a project moved under /projects/default/; the rest stayed.
MOVED = {
    "/instances/": "/projects/default/instances/",
    "/images/": "/projects/default/images/",
    "/networks/": "/projects/default/networks/",
    "/backup-schedules/": "/projects/default/backup-schedules/",
}


def _moved(key: str) -> str:
    """Where schema 4 keeps the key an older schema wrote at ``key``."""
    for old, new in MOVED.items():
        if key.startswith(old):
            return new + key[len(old) :]
    return key


@pytest.fixture
def old_db(tmp_path: Path) -> Path:
    path = tmp_path / "virtfleet.db"
    shutil.copyfile(FIXTURE, path)
    return path


@pytest.fixture
def v3_db(tmp_path: Path) -> Path:
    """A copy of the schema 3 data dir: its store and the identity of the host it names."""
    for name in ("virtfleet.db", "host.json"):
        shutil.copyfile(FIXTURE_V3 / name, tmp_path / name)
    return tmp_path / "virtfleet.db"


@pytest.fixture
def v4_db(tmp_path: Path) -> Path:
    """A copy of the schema 4 data dir: its store and the identity of the host it names."""
    for name in ("virtfleet.db", "host.json"):
        shutil.copyfile(FIXTURE_V4 / name, tmp_path / name)
    return tmp_path / "virtfleet.db"


def _rows(path: Path) -> dict[str, bytes]:
    db = sqlite3.connect(path)
    try:
        return {bytes(k).decode(): bytes(v) for k, v in db.execute("SELECT key, value FROM kv")}
    finally:
        db.close()


def _version(path: Path) -> int:
    db = sqlite3.connect(path)
    try:
        return int(db.execute("PRAGMA user_version").fetchone()[0])
    finally:
        db.close()


def _backups(path: Path, version: int = 1) -> Iterator[Path]:
    return path.parent.glob(f"{path.name}.v{version}-*.bak")


def test_fixtures_are_the_old_formats() -> None:
    """The committed fixtures really are the old formats (else the tests below prove
    nothing): schema 1, and schema 3 with every key of the old layout."""
    assert _version(FIXTURE) == 1 and _version(FIXTURE_V3 / "virtfleet.db") == 3
    assert _version(FIXTURE_V4 / "virtfleet.db") == 4
    lan = json.loads(_rows(FIXTURE_V4 / "virtfleet.db")["/projects/default/networks/lan"])
    assert "host" not in lan
    assert migrations.SCHEMA_VERSION == 5
    old = _rows(FIXTURE_V3 / "virtfleet.db")
    assert not [k for k in old if k.startswith("/projects/")]
    assert {k.split("/")[1] for k in old} >= {"instances", "images", "networks", "macs"}


async def test_migration_keeps_every_record(old_db: Path) -> None:
    """Opening a version 1 file backs it up, migrates it to the current version, and every
    record still parses with its model, unchanged outside the instance specs."""
    before = _rows(old_db)
    store = SQLiteStore(old_db)
    try:
        records = {r.name: r for r in await InstanceRepo(store).list()}
        revision = await store.revision()
    finally:
        await store.close()
    assert _version(old_db) == migrations.SCHEMA_VERSION
    (backup,) = _backups(old_db)
    assert _version(backup) == 1 and _rows(backup) == before
    after = _rows(old_db)
    owners = {f"/projects/default/instances/{n}/owner" for n in ("web", "db", "scratch")}
    # version 3: each instance gets an owner; version 4: project keys move
    assert after.keys() == {_moved(k) for k in before} | owners
    changed = {k for k in before if before[k] != after[_moved(k)]}
    assert changed == {f"/instances/{n}/spec" for n in ("web", "db", "scratch")}
    models = {"/users/": UserRecord, "/projects/default/images/": ImageRecord}
    models |= {"/operations/": Operation, "/events/": Event}
    for key, value in after.items():
        for prefix, model in models.items():
            if key.startswith(prefix):
                model.model_validate_json(value)
    web = records["web"]
    assert (web.spec.vcpus, web.spec.memory_mib, web.spec.image) == (2, 512, "tiny")
    assert web.spec.restart_policy.value == "always" and web.desired.power.value == "running"
    assert web.spec_revision == revision  # the migration is one new revision
    # Version 1 brought back running instances with a restart policy after a reboot.
    assert {n: r.spec.autostart for n, r in records.items()} == {
        "web": True,
        "db": False,  # on-failure, but stopped
        "scratch": False,  # running, but no restart policy
    }
    assert all(r.spec.start_order == 0 and r.spec.host_shutdown == "stop" for r in records.values())
    # Version 3: all of them owned by the data directory's host (host.json), epoch 1.
    host = identity.load(old_db.parent)
    assert host is not None
    assert {n: r.owner for n, r in records.items()} == dict.fromkeys(
        records, Ownership(host=host.id, epoch=1)
    )
    assert all(r.owner_revision == revision for r in records.values())


async def test_schema_3_keys_move_under_the_default_project(v3_db: Path) -> None:
    """Opening the schema 3 file moves every project key (instances, images and templates,
    networks, backup schedules) under /projects/default/ with its value byte for byte,
    leaves every cluster key (hosts, users, tokens, operations, events, audit, MACs,
    alerts, boot report) as it was, and all in one revision."""
    before = _rows(v3_db)
    store = SQLiteStore(v3_db)
    try:
        records = {r.name: r for r in await InstanceRepo(store).list()}
        networks = await NetworkRepo(store).list()
        revision = await store.revision()
        moved = [kv for kv in await store.list("/projects/default/")]
    finally:
        await store.close()
    assert _version(v3_db) == migrations.SCHEMA_VERSION
    (backup,) = _backups(v3_db, 3)
    assert _version(backup) == 3 and _rows(backup) == before
    after = _rows(v3_db)
    host = identity.load(v3_db.parent)
    assert host is not None
    lan = json.loads(after["/projects/default/networks/lan"])
    # schema 5: the nat network names the host of the data dir as its owner, nothing else
    assert lan == json.loads(before["/networks/lan"]) | {"host": host.id}
    expected = {_moved(k): v for k, v in before.items()}
    expected["/projects/default/networks/lan"] = after["/projects/default/networks/lan"]
    assert after == expected  # every record intact
    assert len(moved) == sum(k != _moved(k) for k in before) == 16
    assert {kv.mod_revision for kv in moved} == {revision}  # the migration: one revision
    assert {n: r.owner for n, r in records.items()} == dict.fromkeys(
        ("db", "scratch", "web"), Ownership(host=host.id, epoch=1)
    )
    web = records["web"]
    assert (web.spec.vcpus, web.spec.memory_mib, web.spec.autostart) == (2, 512, True)
    assert web.spec.nics[0].network == "lan" and [n.name for n in networks] == ["lan"]
    assert networks[0].host == host.id and networks[0].scope.value == "host"
    models = {
        "/projects/default/images/": ImageRecord,
        "/projects/default/backup-schedules/": Schedule,
        "/hosts/": HostRecord,
        "/host/boot": BootReport,
        "/users/": UserRecord,
        "/tokens/": TokenRecord,
        "/operations/": Operation,
        "/events/": Event,
        "/alerts/rules/": AlertRule,
    }
    parsed = {
        p: [m.model_validate_json(v) for k, v in after.items() if k.startswith(p)]
        for p, m in models.items()
    }
    assert {p: len(found) for p, found in parsed.items()} == {
        "/projects/default/images/": 2,  # tiny and the template gold
        "/projects/default/backup-schedules/": 1,
        "/hosts/": 1,
        "/host/boot": 1,
        "/users/": 2,
        "/tokens/": 1,
        "/operations/": 5,
        "/events/": 14,
        "/alerts/rules/": 1,
    }


async def test_schema_4_nat_networks_name_their_host(v4_db: Path) -> None:
    """Opening the schema 4 file gives its nat network the data dir's host as owner (in a
    cluster only that host makes it), in one revision; every other record is unchanged."""
    before = _rows(v4_db)
    store = SQLiteStore(v4_db)
    try:
        (lan,) = await NetworkRepo(store).list()
        kv = await store.get("/projects/default/networks/lan")
        revision = await store.revision()
    finally:
        await store.close()
    host = identity.load(v4_db.parent)
    assert host is not None and _version(v4_db) == migrations.SCHEMA_VERSION
    (backup,) = _backups(v4_db, 4)
    assert _rows(backup) == before
    after = _rows(v4_db)
    key = "/projects/default/networks/lan"
    assert json.loads(after.pop(key)) == json.loads(before.pop(key)) | {"host": host.id}
    assert after == before
    assert (lan.host, lan.scope.value, lan.subnet) == (host.id, "host", "10.1.0.0/24")
    assert kv is not None and kv.mod_revision == revision


async def test_schema_3_move_is_seen_by_watchers(v3_db: Path) -> None:
    """A watch from before the migration sees each moved key deleted at its old place and
    put at its new one (as a transaction's writes), so caches and followers keep up."""
    store = SQLiteStore(v3_db)
    try:
        revision = await store.revision()
        changes: list[tuple[str, str]] = []
        async with asyncio.timeout(5):
            async for change in store.watch("/", revision - 1):
                changes.append((change.type, change.key))
                if len(changes) == 32:  # 16 keys moved: 16 deletes, 16 puts
                    break
    finally:
        await store.close()
    assert ("delete", "/instances/web/spec") in changes
    assert ("put", "/projects/default/instances/web/spec") in changes
    assert ("delete", "/networks/lan") in changes and (
        "put",
        "/projects/default/networks/lan",
    ) in changes


def test_failed_schema_4_step_leaves_the_schema_3_file(
    v3_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The key move failing half-way rolls back every move: still schema 3, every key
    where the old release wrote it."""
    rows = _rows(v3_db)

    def broken(rw: migrations.Rewriter) -> None:
        rw.move("/instances/web/spec", "/projects/default/instances/web/spec")
        raise VirtfleetError("step failed")

    monkeypatch.setitem(migrations.MIGRATIONS, 4, broken)
    with pytest.raises(VirtfleetError, match="step failed"):
        SQLiteStore(v3_db)
    assert _version(v3_db) == 3 and _rows(v3_db) == rows


async def test_current_file_is_not_migrated_again(old_db: Path) -> None:
    """A second open finds the current version: no new backup, no rewrite."""
    await SQLiteStore(old_db).close()
    for backup in _backups(old_db):
        backup.unlink()
    rows = _rows(old_db)
    await SQLiteStore(old_db).close()
    assert not list(_backups(old_db)) and _rows(old_db) == rows


def test_newer_schema_is_refused(old_db: Path) -> None:
    """A file from a newer virtfleet is refused with a one-line schema_too_new error,
    and left untouched."""
    db = sqlite3.connect(old_db)
    db.execute(f"PRAGMA user_version = {migrations.SCHEMA_VERSION + 1}")
    db.close()
    rows = _rows(old_db)
    with pytest.raises(SchemaTooNewError) as caught:
        SQLiteStore(old_db)
    assert caught.value.code == "schema_too_new"
    assert "newer virtfleet" in caught.value.message and "\n" not in caught.value.message
    assert _rows(old_db) == rows and _version(old_db) == migrations.SCHEMA_VERSION + 1


def test_failed_migration_leaves_the_old_file(
    old_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A step that fails half-way rolls back everything: the file is still version 1
    with every record as the old release wrote it."""
    rows = _rows(old_db)

    def broken(rw: migrations.Rewriter) -> None:
        migrations._v2_boot_policy(rw)  # rewrites every spec, then fails
        raise VirtfleetError("step failed")

    monkeypatch.setitem(migrations.MIGRATIONS, 2, broken)
    with pytest.raises(VirtfleetError, match="step failed"):
        SQLiteStore(old_db)
    assert _version(old_db) == 1 and _rows(old_db) == rows


def test_daemon_refuses_to_start_on_a_newer_store(old_db: Path) -> None:
    """``virtfleet serve`` on a store from a newer virtfleet exits non-zero with the one-line
    schema_too_new error, before serving anything."""
    data_dir = old_db.parent
    db = sqlite3.connect(old_db)
    db.execute(f"PRAGMA user_version = {migrations.SCHEMA_VERSION + 1}")
    db.close()
    probed = {"boot_id": boot_id_of(Settings()), "qemu_path": "/bin/true", "machine_types": ["pc"]}
    facts = FACTS.model_copy(update=probed)
    (data_dir / "host-facts.json").write_text(facts.model_dump_json())  # no probe
    result = CliRunner().invoke(app, ["--data-dir", str(data_dir), "serve", "--driver", "fake"])
    assert result.exit_code != 0
    assert "schema_too_new" in result.output and "newer virtfleet" in result.output
    assert not (data_dir / "api.sock").exists()
