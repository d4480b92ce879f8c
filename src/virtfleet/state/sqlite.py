"""``SQLiteStore``: the embedded ``StateStore``, one SQLite file (WAL, synchronous=NORMAL).

Owns the on-disk layout of the embedded mode and nothing else: the global
revision and compaction point (``meta``), the live keys (``kv``), the leases
with their wall-clock expiry (``leases``) and a bounded change history for
watches (``changes``). Keys are stored as UTF-8 blobs so SQLite orders them
exactly as Python orders ``str``. The semantics live in ``CoreStore``.

The file is opened in exclusive locking mode: one process owns it, a second
``SQLiteStore`` on the same file fails with ``InUseError``. Calls are short and
run synchronously on the event loop.
"""

from __future__ import annotations

import builtins
import contextlib
import logging
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from virtfleet.errors import InUseError, VirtfleetError
from virtfleet.state import migrations
from virtfleet.state._core import DEFAULT_HISTORY, Batch, CoreStore, Lease, Page
from virtfleet.state.store import KeyValue, WatchEvent

log = logging.getLogger(__name__)
SCHEMA_VERSION = migrations.SCHEMA_VERSION
LOCK_TIMEOUT_S = 2.0
_KV_COLUMNS = "key, value, create_revision, mod_revision, version, lease"
_SCHEMA = f"""
BEGIN IMMEDIATE;
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS kv (
    key BLOB PRIMARY KEY, value BLOB NOT NULL, create_revision INTEGER NOT NULL,
    mod_revision INTEGER NOT NULL, version INTEGER NOT NULL, lease INTEGER
);
CREATE INDEX IF NOT EXISTS kv_by_lease ON kv (lease) WHERE lease IS NOT NULL;
CREATE TABLE IF NOT EXISTS leases (id INTEGER PRIMARY KEY, ttl REAL NOT NULL, expiry REAL NOT NULL);
CREATE TABLE IF NOT EXISTS changes (
    revision INTEGER NOT NULL, seq INTEGER NOT NULL, type TEXT NOT NULL,
    key BLOB NOT NULL, value BLOB, PRIMARY KEY (revision, seq)
) WITHOUT ROWID;
PRAGMA user_version = {SCHEMA_VERSION};
COMMIT;
"""


class SQLiteStore(CoreStore):
    """The state of one node in the SQLite file at ``path``; keeps ``history`` changes."""

    def __init__(self, path: Path, *, history: int = DEFAULT_HISTORY) -> None:
        self._path = Path(path)
        self._db = _connect(self._path)
        try:
            revision = self._meta("revision")
            self._compacted = self._meta("compacted")
            self._change_count: int = self._query("SELECT COUNT(*) FROM changes")[0][0]
            rows = self._query("SELECT id, ttl, expiry FROM leases")
            leases = [Lease(int(r[0]), float(r[1]), float(r[2])) for r in rows]
            super().__init__(history=history, revision=revision, leases=leases)
        except BaseException:
            self._db.close()
            raise

    def side_connection(self) -> sqlite3.Connection:
        """The open connection, for side tables sharing this file (the metrics history);
        their owners must never touch ``meta``, ``kv``, ``leases`` or ``changes``."""
        return self._db

    def _now(self) -> float:
        return time.time()  # lease expiries are persisted, so they must survive a restart

    # -- reads --------------------------------------------------------------

    def _read(self, key: str) -> KeyValue | None:
        rows = self._query(f"SELECT {_KV_COLUMNS} FROM kv WHERE key = ?", (key.encode(),))
        return _kv(rows[0]) if rows else None

    def _scan(self, prefix: str, page: Page | None = None) -> builtins.list[KeyValue]:
        where, params = _prefix_clause(prefix)
        order, limit = "", ""
        if page is not None:
            if page.end is not None:
                where, params = f"({where}) AND key < ?", (*params, page.end.encode())
            order = " DESC" if page.descending else ""
            limit = f" LIMIT {int(page.limit)}" if page.limit is not None else ""
        sql = f"SELECT {_KV_COLUMNS} FROM kv WHERE {where} ORDER BY key{order}{limit}"
        return [_kv(row) for row in self._query(sql, params)]

    def _count(self, prefix: str) -> int:
        where, params = _prefix_clause(prefix)
        return int(self._query(f"SELECT COUNT(*) FROM kv WHERE {where}", params)[0][0])

    def _lease_keys(self, lease: int) -> builtins.list[str]:
        rows = self._query("SELECT key FROM kv WHERE lease = ? ORDER BY key", (lease,))
        return [bytes(row[0]).decode() for row in rows]

    def _history(self, prefix: str, after: int) -> builtins.list[WatchEvent]:
        where, params = _prefix_clause(prefix)
        rows = self._query(
            f"SELECT revision, type, key, value FROM changes WHERE revision > ? AND {where}"
            " ORDER BY revision, seq",
            (after, *params),
        )
        return [_event(row) for row in rows]

    def _compacted_revision(self) -> int:
        return self._compacted

    # -- writes -------------------------------------------------------------

    def _write(self, batch: Batch) -> None:
        count = self._change_count + len(batch.changes)
        compacted = self._compacted
        with self._transaction() as db:
            for seq, (event, kv) in enumerate(batch.changes):
                _apply(db, seq, event, kv)
            if batch.changes:
                _set_meta(db, "revision", batch.revision)
            if batch.drop_lease is not None:
                db.execute("DELETE FROM leases WHERE id = ?", (batch.drop_lease,))
            if count > self._history_limit + self._history_limit // 10:
                compacted, count = self._trim(db)
        self._change_count, self._compacted = count, compacted

    def _trim(self, db: sqlite3.Connection) -> tuple[int, int]:
        """Drop the oldest whole revisions so at most ``history`` changes remain.

        Returns the new compaction revision and the number of changes kept.
        """
        row = db.execute(
            "SELECT revision FROM changes ORDER BY revision DESC, seq DESC LIMIT 1 OFFSET ?",
            (self._history_limit,),
        ).fetchone()
        if row is None:
            return self._compacted, self._change_count
        compacted = int(row[0])
        db.execute("DELETE FROM changes WHERE revision <= ?", (compacted,))
        _set_meta(db, "compacted", compacted)
        return compacted, int(db.execute("SELECT COUNT(*) FROM changes").fetchone()[0])

    def _save_lease(self, lease: Lease) -> None:
        with self._transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO leases (id, ttl, expiry) VALUES (?, ?, ?)",
                (lease.id, lease.ttl, lease.expiry),
            )

    def _release(self) -> None:
        with self._translated():
            self._db.close()

    # -- sqlite plumbing ----------------------------------------------------

    @contextlib.contextmanager
    def _translated(self) -> Iterator[None]:
        """Turn sqlite3 errors into ``VirtfleetError`` naming the file."""
        try:
            yield
        except sqlite3.Error as err:
            raise VirtfleetError(f"state file {self._path}: {err}") from err

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: committed if the block succeeds, rolled back otherwise."""
        with self._translated():
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _query(self, sql: str, params: tuple[Any, ...] = ()) -> builtins.list[Any]:
        with self._translated():
            return self._db.execute(sql, params).fetchall()

    def _meta(self, name: str) -> int:
        rows = self._query("SELECT value FROM meta WHERE name = ?", (name,))
        return int(rows[0][0]) if rows else 0


def _connect(path: Path) -> sqlite3.Connection:
    """Open (creating if needed) the state file, owned exclusively by this process."""
    try:
        db = sqlite3.connect(path, isolation_level=None, timeout=LOCK_TIMEOUT_S)
    except sqlite3.Error as err:
        raise VirtfleetError(f"cannot open state file {path}: {err}") from err
    try:
        db.execute("PRAGMA locking_mode = EXCLUSIVE")
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = NORMAL")
        migrated = migrations.migrate(db, path)  # backup first; one transaction
        if migrated is not None:
            log.warning("state file %s migrated from schema %d", path, migrated)
        db.executescript(_SCHEMA)
    except sqlite3.Error as err:
        db.close()
        if err.sqlite_errorcode in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
            raise InUseError(f"state file {path} is in use by another process") from err
        raise VirtfleetError(f"cannot open state file {path}: {err}") from err
    except BaseException:
        db.close()
        raise
    return db


def _prefix_clause(prefix: str) -> tuple[str, tuple[bytes, ...]]:
    """A ``WHERE`` fragment (and its parameters) matching keys that start with ``prefix``."""
    low = prefix.encode()
    if not low:
        return "1", ()
    # UTF-8 never contains the byte 0xFF, so bumping the last byte cannot overflow.
    high = low[:-1] + bytes([low[-1] + 1])
    return "key >= ? AND key < ?", (low, high)


def _apply(db: sqlite3.Connection, seq: int, event: WatchEvent, kv: KeyValue | None) -> None:
    key = event.key.encode()
    if kv is None:
        db.execute("DELETE FROM kv WHERE key = ?", (key,))
    else:
        db.execute(
            f"INSERT OR REPLACE INTO kv ({_KV_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
            (key, kv.value, kv.create_revision, kv.mod_revision, kv.version, kv.lease),
        )
    db.execute(
        "INSERT INTO changes (revision, seq, type, key, value) VALUES (?, ?, ?, ?, ?)",
        (event.revision, seq, event.type, key, event.value),
    )


def _set_meta(db: sqlite3.Connection, name: str, value: int) -> None:
    db.execute("INSERT OR REPLACE INTO meta (name, value) VALUES (?, ?)", (name, value))


def _kv(row: Any) -> KeyValue:
    key, value, created, modified, version, lease = row
    return KeyValue(bytes(key).decode(), bytes(value), created, modified, version, lease)


def _event(row: Any) -> WatchEvent:
    revision, kind, key, value = row
    name = bytes(key).decode()
    if kind == "put":
        return WatchEvent("put", name, bytes(value), revision)
    return WatchEvent("delete", name, None, revision)
