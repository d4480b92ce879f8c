"""The backup repository without QEMU: chunks, dedup, manifests, verify, gc, restore refusal,
ingest of a real qcow2 written by qemu-io, and the retention policy on a fake calendar."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO

import pytest

from virtfleet.errors import BackupDamagedError, InvalidInputError, RepositoryFullError
from virtfleet.storage.backup import (
    CHUNK_SIZE,
    ZERO,
    BackupManifest,
    DiskManifest,
    Repository,
    RetentionPolicy,
    select_kept,
)
from virtfleet.storage.backup import chunks as chunks_module
from virtfleet.storage.backup.ingest import ingest
from virtfleet.storage.backup.manifest import BackupStats
from virtfleet.storage.backup.repo import check_backup_id, new_backup_id

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    r = Repository(tmp_path / "repo")
    r.init()
    return r


def _manifest(repo: Repository, vm: str, blocks: list[bytes], when: datetime) -> BackupManifest:
    chunks = [repo.chunks.put(b)[0] for b in blocks]
    m = BackupManifest(
        id=new_backup_id(when),
        instance=vm,
        created_at=when,
        kind="full",
        disks={"root": DiskManifest(size=len(blocks) * CHUNK_SIZE, chunks=chunks)},
    )
    repo.save(m)
    return m


def _block(byte: int) -> bytes:
    return bytes([byte]) * CHUNK_SIZE


def test_chunks_dedup_and_zero(repo: Repository) -> None:
    """Equal data is stored once; all-zero chunks are never stored."""
    a, new = repo.chunks.put(_block(1))
    assert new > 0 and repo.chunks.put(_block(1)) == (a, 0)
    assert repo.chunks.put(bytes(CHUNK_SIZE)) == (ZERO, 0)
    assert list(repo.chunks.all()) == [a]
    assert repo.chunks.get(a) == _block(1)


def test_verify_names_exactly_the_damaged_backups(repo: Repository) -> None:
    """Across VMs and backups, a corrupt chunk marks exactly the backups that use it."""
    m1 = _manifest(repo, "a", [_block(1), _block(2)], T0)
    m2 = _manifest(repo, "b", [_block(2), _block(3)], T0 + timedelta(hours=1))
    m3 = _manifest(repo, "a", [_block(4)], T0 + timedelta(hours=2))
    assert repo.verify().ok
    chunk = repo.chunks.put(_block(2))[0]
    path = repo.chunks.path(chunk)
    path.write_bytes(path.read_bytes()[:-2] + b"xx")
    report = repo.verify()
    assert report.damaged_backups == sorted([m1.id, m2.id]) and report.damaged_chunks == [chunk]
    assert m3.id not in report.damaged_backups
    with pytest.raises(BackupDamagedError) as err:
        repo.write_raw(m2, "root", repo.tmp / "out.raw")
    assert err.value.details["chunks"] == [chunk]
    assert not (repo.tmp / "out.raw").exists()


def test_gc_keeps_referenced_chunks(repo: Repository) -> None:
    m1 = _manifest(repo, "a", [_block(1), _block(2)], T0)
    _manifest(repo, "a", [_block(2)], T0 + timedelta(days=1))
    repo.chunks.put(_block(9))  # an interrupted backup's orphan
    repo.delete(m1)
    removed, _ = repo.gc()
    assert removed == 2 and repo.verify().ok and len(list(repo.chunks.all())) == 1


def test_restore_round_trip(repo: Repository, tmp_path: Path) -> None:
    m = _manifest(repo, "a", [_block(7), bytes(CHUNK_SIZE), _block(8)], T0)
    out = tmp_path / "disk.raw"
    repo.write_raw(m, "root", out)
    assert out.read_bytes() == _block(7) + bytes(CHUNK_SIZE) + _block(8)


def test_full_filesystem_is_repository_full(
    repo: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(*_: object, **__: object) -> IO[bytes]:
        return open("/dev/full", "wb")  # writes to it fail with ENOSPC

    monkeypatch.setattr(chunks_module, "open", full, raising=False)
    with pytest.raises(RepositoryFullError):
        repo.chunks.put(_block(5))
    assert list(repo.chunks.all()) == [] and list(repo.tmp.iterdir()) == []


def test_backup_ids_are_path_safe() -> None:
    assert check_backup_id(new_backup_id(T0)).startswith("20260101t120000z-")
    for bad in ("../x", "20260101t120000z-00000/", ""):
        with pytest.raises(InvalidInputError):
            check_backup_id(bad)


def test_ingest_inherits_unwritten_ranges(repo: Repository, tmp_path: Path) -> None:
    """An incremental target holding one written cluster (and one zeroed) changes exactly
    those bytes of the parent's chunks; unwritten ranges keep the parent's hashes."""
    size = 4 * CHUNK_SIZE
    parent = DiskManifest(size=size, chunks=[repo.chunks.put(_block(i + 1))[0] for i in range(4)])
    target = tmp_path / "t.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(target), str(size)], check=True)
    writes = f"write -P 0xab {CHUNK_SIZE + 65536} 65536"
    zero = f"write -z {3 * CHUNK_SIZE} 65536"
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", writes, "-c", zero, str(target)], check=True)
    stats = BackupStats()
    chunks = ingest(target, size, repo.chunks, parent, stats)
    assert chunks[0] == parent.chunks[0] and chunks[2] == parent.chunks[2]
    expected1 = bytearray(_block(2))
    expected1[65536 : 2 * 65536] = b"\xab" * 65536
    assert repo.chunks.get(chunks[1]) == bytes(expected1)
    expected3 = bytearray(_block(4))
    expected3[:65536] = bytes(65536)
    assert repo.chunks.get(chunks[3]) == bytes(expected3)
    assert stats.bytes_read == 2 * 65536


def _calendar(days: int) -> list[tuple[str, datetime]]:
    """Two backups a day (06:00 and 18:00) for ``days`` days ending 2026-03-31."""
    end = datetime(2026, 3, 31, tzinfo=UTC)
    out = []
    for d in range(days):
        for hour in (6, 18):
            t = end - timedelta(days=d) + timedelta(hours=hour)
            out.append((t.strftime("%m%d-%H"), t))
    return out


def test_prune_policy_on_a_fake_calendar() -> None:
    """keep-last 3 + daily 4 + weekly 2 + monthly 3 keeps exactly the documented set."""
    backups = _calendar(90)
    kept = select_kept(backups, RetentionPolicy(last=3, daily=4, weekly=2, monthly=3))
    last3 = {"0331-18", "0331-06", "0330-18"}
    daily = {"0331-18", "0330-18", "0329-18", "0328-18"}
    weekly = {"0331-18", "0329-18"}  # newest of ISO week 14 (Mon 30 Mar) and of week 13
    monthly = {"0331-18", "0228-18", "0131-18"}
    assert kept == last3 | daily | weekly | monthly


def test_prune_empty_policy_keeps_all_and_last_only() -> None:
    backups = _calendar(3)
    assert select_kept(backups, RetentionPolicy()) == {i for i, _ in backups}
    assert select_kept(backups, RetentionPolicy(last=1)) == {"0331-18"}


def test_small_files_ride_along_as_chunks_gc_keeps_and_verify_checks(
    repo: Repository, tmp_path: Path
) -> None:
    """A VM's UEFI variable stores are stored as chunks of the manifest: read back whole,
    kept by gc while the backup exists, and a damaged one marks the backup damaged."""
    data = bytes(range(256)) * 2112 + b"\x00" * CHUNK_SIZE  # a zero chunk past the first
    files = {"uefi.vars.fd": data, "tpm/tpm2-00.permall": b"tpm state"}
    m = BackupManifest(
        id=new_backup_id(T0), instance="a", created_at=T0, kind="full", disks={},
        files=repo.put_files(files),
    )  # fmt: skip
    repo.save(m)
    assert repo.read_file(repo.list()[0], "uefi.vars.fd") == data
    assert repo.read_file(repo.list()[0], "tpm/tpm2-00.permall") == b"tpm state"
    assert repo.gc() == (0, 0)
    [chunk] = [c for c in m.files["uefi.vars.fd"].chunks if c != ZERO]
    repo.chunks.path(chunk).write_bytes(b"broken")
    assert repo.verify().damaged_backups == [m.id]
    with pytest.raises(BackupDamagedError):
        repo.require_intact(m)
