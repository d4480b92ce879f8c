"""Schema migrations of the SQLite state file (state/migrations.py), on the committed
data directory written by schema version 1 (tests/fixtures/datadir-v1)."""

from __future__ import annotations

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
from virtfleet.model.auth import UserRecord
from virtfleet.model.event import Event
from virtfleet.model.instance import Ownership
from virtfleet.model.operation import Operation
from virtfleet.state import identity, migrations
from virtfleet.state.repos import InstanceRepo
from virtfleet.state.sqlite import SQLiteStore
from virtfleet.storage.images import ImageRecord

FIXTURE = Path(__file__).parents[1] / "fixtures" / "datadir-v1" / "virtfleet.db"


@pytest.fixture
def old_db(tmp_path: Path) -> Path:
    path = tmp_path / "virtfleet.db"
    shutil.copyfile(FIXTURE, path)
    return path


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


def _backups(path: Path) -> Iterator[Path]:
    return path.parent.glob(f"{path.name}.v1-*.bak")


def test_fixture_is_version_1() -> None:
    """The committed fixture really is the old format (else the tests below prove nothing)."""
    assert _version(FIXTURE) == 1
    assert migrations.SCHEMA_VERSION == 3


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
    owners = {f"/instances/{n}/owner" for n in ("web", "db", "scratch")}
    assert after.keys() == before.keys() | owners  # version 3: each instance gets an owner
    changed = {k for k in before if before[k] != after[k]}
    assert changed == {f"/instances/{n}/spec" for n in ("web", "db", "scratch")}
    models = {"/users/": UserRecord, "/images/": ImageRecord, "/operations/": Operation}
    models["/events/"] = Event
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
