"""``SQLiteHistoryBackend``: the metrics history as a table in the embedded store's file.

Why a side table on the store's own connection, not keys in the store: samples every
10 s would bump the store revision, fill the bounded watch history (``changes``) and
wake every watcher -- metrics are not desired/observed state. Why not a second
connection or file: ``SQLiteStore`` holds the file in exclusive locking mode, and one
file is one thing to back up. This module owns only ``metric_points`` and must never
touch the store's tables (``meta``, ``kv``, ``leases``, ``changes``).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterator

from virtfleet.errors import VirtfleetError
from virtfleet.state.history import Agg

_SCHEMA = """
CREATE TABLE IF NOT EXISTS metric_points (
    target TEXT NOT NULL, tier INTEGER NOT NULL, ts INTEGER NOT NULL, data TEXT NOT NULL,
    PRIMARY KEY (target, tier, ts)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS metric_points_by_age ON metric_points (tier, ts);
"""


class SQLiteHistoryBackend:
    """Buckets as JSON rows; calls are short and run on the event loop's thread."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        with self._errors():
            for statement in filter(str.strip, _SCHEMA.split(";")):
                db.execute(statement)

    @staticmethod
    @contextlib.contextmanager
    def _errors() -> Iterator[None]:
        """Turn sqlite3 errors into ``VirtfleetError`` (once, at this boundary)."""
        try:
            yield
        except sqlite3.Error as err:
            raise VirtfleetError(f"metrics history: {err}") from err

    def load(self, target: str, tier: int, ts: int) -> Agg | None:
        with self._errors():
            row = self._db.execute(
                "SELECT data FROM metric_points WHERE target = ? AND tier = ? AND ts = ?",
                (target, tier, ts),
            ).fetchone()
        return _agg(row[0]) if row else None

    def save(self, rows: list[tuple[str, int, int, Agg]]) -> None:
        with self._errors():
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    "INSERT OR REPLACE INTO metric_points (target, tier, ts, data)"
                    " VALUES (?, ?, ?, ?)",
                    [(t, tier, ts, json.dumps(agg)) for t, tier, ts, agg in rows],
                )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def scan(self, target: str, tier: int, start: int, end: int) -> list[tuple[int, Agg]]:
        with self._errors():
            rows = self._db.execute(
                "SELECT ts, data FROM metric_points WHERE target = ? AND tier = ?"
                " AND ts >= ? AND ts < ? ORDER BY ts",
                (target, tier, start, end),
            ).fetchall()
        return [(int(ts), _agg(data)) for ts, data in rows]

    def prune(self, tier: int, before: int) -> int:
        with self._errors():
            cur = self._db.execute(
                "DELETE FROM metric_points WHERE tier = ? AND ts < ?", (tier, before)
            )
        return cur.rowcount

    def count(self) -> int:
        with self._errors():
            return int(self._db.execute("SELECT COUNT(*) FROM metric_points").fetchone()[0])


def _agg(data: str) -> Agg:
    loaded = json.loads(data)
    return {str(k): [float(x) for x in v] for k, v in loaded.items()}
