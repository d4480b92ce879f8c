"""What the Backups page reads: the repository's counts, sizes, dedup ratio and last verify
(``GET /1.0/backups/repository``), and the cron helper's next runs
(``GET /1.0/backup-schedules/next-runs``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx

from tests.functional.platform import Platform
from virtfleet.storage.backup import CHUNK_SIZE, BackupManifest, DiskManifest, Repository
from virtfleet.storage.backup.repo import new_backup_id

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def _backup(repo: Repository, vm: str, blocks: list[bytes], when: datetime) -> None:
    chunks = [repo.chunks.put(b)[0] for b in blocks]
    disk = DiskManifest(size=len(blocks) * CHUNK_SIZE, chunks=chunks)
    repo.save(BackupManifest(id=new_backup_id(when), instance=vm, created_at=when, kind="full",
                             disks={"root": disk}))  # fmt: skip


async def _wait(api: httpx.AsyncClient, r: httpx.Response) -> dict[str, object]:
    assert r.status_code == 202, r.text
    done = await api.get(f"/1.0/operations/{r.json()['id']}/wait", params={"timeout_s": 10})
    result: dict[str, object] = done.json()
    return result


async def test_repository_stats_count_dedup_and_the_last_verify(
    platform: Platform, api: httpx.AsyncClient
) -> None:
    empty = (await api.get("/1.0/backups/repository")).json()
    assert empty["backups"] == 0 and empty["dedup_ratio"] == 0 and empty["last_verify"] is None
    repo = Repository(platform.settings.backup_repo_dir)
    repo.init()
    a, b = b"a" * CHUNK_SIZE, b"b" * CHUNK_SIZE
    _backup(repo, "web", [a, b, bytes(CHUNK_SIZE)], T0)  # the zero range is not data
    _backup(repo, "web", [a, b, a], T0 + timedelta(days=1))  # nothing new to store
    _backup(repo, "db", [a], T0 + timedelta(days=2))
    stats = (await api.get("/1.0/backups/repository")).json()
    assert (stats["backups"], stats["instances"], stats["chunks"]) == (3, 2, 2)
    assert stats["logical_bytes"] == 6 * CHUNK_SIZE
    assert stats["stored_bytes"] == repo.stored_bytes() > 0
    assert stats["dedup_ratio"] == round(6 * CHUNK_SIZE / repo.stored_bytes(), 2)

    op = await _wait(api, await api.post("/1.0/backups/verify"))
    assert op["status"] == "success", op
    last = (await api.get("/1.0/backups/repository")).json()["last_verify"]
    assert last["ok"] is True and last["backups"] == 3 and last["damaged_backups"] == []
    assert datetime.fromisoformat(last["at"]) > datetime.now(UTC) - timedelta(minutes=5)


async def test_next_runs_of_a_cron_expression(api: httpx.AsyncClient) -> None:
    r = await api.get("/1.0/backup-schedules/next-runs", params={"cron": "30 3 * * *", "count": 3})
    assert r.status_code == 200, r.text
    runs = [datetime.fromisoformat(t) for t in r.json()["next_runs"]]
    assert len(runs) == 3 and all((t.hour, t.minute) == (3, 30) for t in runs)
    assert runs[1] - runs[0] == timedelta(days=1) and runs[0] > datetime.now(UTC)
    bad = await api.get("/1.0/backup-schedules/next-runs", params={"cron": "every day"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_input"
