"""The store's schema version and the steps that carry an older SQLite file forward.

Owns ``SCHEMA_VERSION`` (``PRAGMA user_version`` of the state file) and
``MIGRATIONS``: step ``n`` turns a version ``n - 1`` file into version ``n``.
``migrate`` copies the file aside first (``<file>.v<old>-<time>.bak``), then runs
every missing step and the version bump in one transaction: a failed upgrade
leaves the file exactly as the old release wrote it. A file newer than this code
is refused (``SchemaTooNewError``): an older daemon would misread what it does not
know. Steps rewrite stored documents as new revisions (with their ``changes``
rows), so watchers and caches see them as ordinary writes. Only SQL and JSON here
(and the host identity beside the file, ``state.identity``); nothing of
``CoreStore``'s semantics.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from virtfleet.errors import SchemaTooNewError
from virtfleet.state import identity, keys

SCHEMA_VERSION = 5
Step = Callable[["Rewriter"], None]


class Rewriter:
    """Rewrites stored documents inside the migration's transaction, all under one new
    revision (one ``changes`` row per key, as a ``txn`` would write)."""

    def __init__(self, db: sqlite3.Connection, path: Path) -> None:
        self.db = db
        self.path = path
        row = db.execute("SELECT value FROM meta WHERE name = 'revision'").fetchone()
        self.revision = (int(row[0]) if row else 0) + 1
        self.changed = 0

    def documents(self, prefix: str, suffix: str = "") -> list[tuple[str, dict[str, Any]]]:
        """Every JSON document under ``prefix`` whose key ends with ``suffix``."""
        rows = self.db.execute(
            "SELECT key, value FROM kv WHERE key >= ? AND key < ? ORDER BY key",
            (prefix.encode(), prefix.encode() + b"\xff"),
        ).fetchall()
        found = []
        for key, value in rows:
            name = bytes(key).decode()
            if name.endswith(suffix):
                found.append((name, json.loads(bytes(value))))
        return found

    def put(self, key: str, document: dict[str, Any]) -> None:
        """Rewrite (or create) ``key`` at the migration's revision."""
        value = json.dumps(document, separators=(",", ":")).encode()
        self.db.execute(
            "INSERT INTO kv (key, value, create_revision, mod_revision, version)"
            " VALUES (?, ?, ?, ?, 1) ON CONFLICT (key) DO UPDATE SET value = excluded.value,"
            " mod_revision = excluded.mod_revision, version = kv.version + 1",
            (key.encode(), value, self.revision, self.revision),
        )
        self.db.execute(
            "INSERT INTO changes (revision, seq, type, key, value) VALUES (?, ?, 'put', ?, ?)",
            (self.revision, self.changed, key.encode(), value),
        )
        self.changed += 1

    def keys(self, prefix: str) -> list[str]:
        """Every key under ``prefix``, in order."""
        rows = self.db.execute(
            "SELECT key FROM kv WHERE key >= ? AND key < ? ORDER BY key",
            (prefix.encode(), prefix.encode() + b"\xff"),
        ).fetchall()
        return [bytes(row[0]).decode() for row in rows]

    def move(self, old: str, new: str) -> None:
        """Rename ``old`` to ``new`` (value and lease kept): a delete and a put at the
        migration's revision, as a watcher would see them."""
        value, lease = self.db.execute(
            "SELECT value, lease FROM kv WHERE key = ?", (old.encode(),)
        ).fetchone()
        self.db.execute("DELETE FROM kv WHERE key = ?", (old.encode(),))
        self.db.execute(
            "INSERT INTO kv (key, value, create_revision, mod_revision, version, lease)"
            " VALUES (?, ?, ?, ?, 1, ?)",
            (new.encode(), value, self.revision, self.revision, lease),
        )
        for kind, key, written in (("delete", old, None), ("put", new, value)):
            self.db.execute(
                "INSERT INTO changes (revision, seq, type, key, value) VALUES (?, ?, ?, ?, ?)",
                (self.revision, self.changed, kind, key.encode(), written),
            )
            self.changed += 1

    def finish(self) -> None:
        if self.changed:
            self.db.execute(
                "INSERT OR REPLACE INTO meta (name, value) VALUES ('revision', ?)",
                (self.revision,),
            )


def _v2_boot_policy(rw: Rewriter) -> None:
    """Version 2: every instance gets an explicit start-at-boot policy. Version 1 brought
    back, after a host reboot, the instances that were running with a restart policy
    (their dead process counted as a crash); they become ``autostart`` so an upgrade does
    not change what comes back at boot. Everything else stays stopped at boot."""
    for key, spec in rw.documents("/instances/", "/spec"):
        name = key.split("/")[2]
        desired = dict(rw.documents(f"/instances/{name}/", "/desired")).get(
            f"/instances/{name}/desired", {}
        )
        was_running = desired.get("power", "stopped") in ("running", "paused")
        policy = spec.get("restart_policy", "no")
        spec.setdefault("autostart", was_running and policy != "no")
        spec.setdefault("start_order", 0)
        spec.setdefault("start_delay_s", 0.0)
        spec.setdefault("host_shutdown", "stop")
        rw.put(key, spec)


def _v3_owners(rw: Rewriter) -> None:
    """Version 3: every instance has an owning host and an ownership epoch
    (``/instances/{name}/owner``). A store from before owners was one daemon's: its
    instances go to the host of the data directory the file is in (its ``host.json``,
    made now if the daemon has not made it yet), at epoch 1."""
    host = identity.load_or_create(rw.path.parent).id
    for key, _ in rw.documents("/instances/", "/spec"):
        name = key.split("/")[2]
        rw.put(f"/instances/{name}/owner", {"host": host, "epoch": 1})


def _v4_project_keys(rw: Rewriter) -> None:
    """Version 4: keys gain a project segment. What belongs to a project (instances,
    images and templates, networks, backup schedules) moves from ``/{kind}/...`` to
    ``/projects/default/{kind}/...`` (``state/keys.py``); cluster-wide keys stay."""
    for scoped in keys.PROJECT_SCOPED:
        for old in rw.keys(f"/{scoped}"):
            rw.move(old, keys.project_root() + old[1:])


def _v5_network_hosts(rw: Rewriter) -> None:
    """Version 5: a nat or isolated network names the host that owns it (in a cluster
    only that host makes it). A store from before was one daemon's: its host owns them."""
    host = identity.load_or_create(rw.path.parent).id
    for key, spec in rw.documents(keys.NETWORKS):
        if spec.get("mode", "nat") != "bridged" and spec.get("host") is None:
            spec["host"] = host
            rw.put(key, spec)


MIGRATIONS: dict[int, Step] = {
    2: _v2_boot_policy,
    3: _v3_owners,
    4: _v4_project_keys,
    5: _v5_network_hosts,
}


def migrate(db: sqlite3.Connection, path: Path) -> int | None:
    """Bring the open file at ``path`` to ``SCHEMA_VERSION``; the version it had if it
    was migrated, None if it was new or current. ``SchemaTooNewError`` if newer."""
    version = int(db.execute("PRAGMA user_version").fetchone()[0])
    if version > SCHEMA_VERSION:
        raise SchemaTooNewError(
            f"state file {path} has schema version {version}; this virtfleet knows up to"
            f" {SCHEMA_VERSION}: run a newer virtfleet, or restore the .bak file the"
            " upgrade left beside it"
        )
    if version == 0 or version == SCHEMA_VERSION:
        return None  # a new file gets the current schema; nothing to carry forward
    backup(db, path, version)
    db.execute("BEGIN IMMEDIATE")
    try:
        rw = Rewriter(db, path)
        for step in range(version + 1, SCHEMA_VERSION + 1):
            MIGRATIONS[step](rw)
        rw.finish()
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")  # transactional: file header
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
    return version


def backup(db: sqlite3.Connection, path: Path, version: int) -> Path:
    """A consistent copy of the whole file (SQLite's online backup: WAL included)."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    target = path.with_name(f"{path.name}.v{version}-{stamp}.bak")
    with contextlib.closing(sqlite3.connect(target)) as copy:
        db.backup(copy)
    target.chmod(0o600)
    return target
