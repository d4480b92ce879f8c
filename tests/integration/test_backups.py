"""Backups of a real tiny guest: full, incremental, restore, verify, prune, refusals.

Each backup point is also copied aside (guest paused, ``qemu-img convert``) so
restores are checked both inside the restored guest (checksum) and byte for
byte with ``qemu-img compare``.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from virtfleet.client import ApiError
from virtfleet.client import backups as calls
from virtfleet.model.backup import BackupInfo

from .conftest import Daemon, _running_daemon
from .guestdata import guest_sum, run_op, write_random

pytestmark = pytest.mark.integration
VM = "bkvm"
DATA = "/root/data.bin"


class Point:
    """One backup point: the backup, the guest checksum, a reference copy of the disk."""

    def __init__(self, info: BackupInfo, digest: str, ref: Path) -> None:
        self.info, self.digest, self.ref = info, digest, ref


@pytest.fixture(scope="module")
def bkd(request: pytest.FixtureRequest, tiny_cache: Path) -> Iterator[Daemon]:
    for d in _running_daemon(request, ("--listen", "none")):
        d.create(VM)
        d.wait_marker(VM)
        yield d


def disk(d: Daemon, vm: str) -> Path:
    return d.data_dir / "disks" / vm / "root.qcow2"


def backup_point(d: Daemon, tag: str, full: bool = False) -> Point:
    """Checksum, pause, copy the disk aside, back up (paused: same instant), resume."""
    digest = guest_sum(d, VM, DATA)
    d.action(VM, "pause")
    ref = d.data_dir / f"ref-{tag}.qcow2"
    subprocess.run(
        ["qemu-img", "convert", "-U", "-O", "qcow2", str(disk(d, VM)), str(ref)], check=True
    )
    done = run_op(d, calls.create_backup(VM, full=full))
    d.action(VM, "resume")
    assert done.status == "success", done
    return Point(BackupInfo.model_validate(done.result), digest, ref)


def check_restore(d: Daemon, point: Point, target: str) -> None:
    done = run_op(d, calls.restore_backup(point.info.id, target))
    assert done.status == "success", done
    cmp = subprocess.run(
        ["qemu-img", "compare", str(point.ref), str(disk(d, target))], capture_output=True
    )
    assert cmp.returncode == 0, cmp.stdout + cmp.stderr
    d.action(target, "start")
    d.wait_marker(target)
    assert guest_sum(d, target, DATA) == point.digest
    d.action(target, "stop", force=True)


@pytest.fixture(scope="module")
def points(bkd: Daemon) -> list[Point]:
    """Full backup, ~1% of the disk changed, incremental, changed again, incremental."""
    write_random(bkd, VM, DATA, 8192)
    p0 = backup_point(bkd, "p0")
    write_random(bkd, VM, DATA, 2560, seek_kib=1024)  # ~1% of the 256 MiB disk
    p1 = backup_point(bkd, "p1")
    write_random(bkd, VM, DATA, 1024, seek_kib=6144)
    p2 = backup_point(bkd, "p2")
    return [p0, p1, p2]


def test_full_then_incrementals(points: list[Point]) -> None:
    """The first backup is full (and says why); later ones read only what changed."""
    p0, p1, p2 = points
    assert p0.info.kind == "full" and p0.info.full_reason
    assert p1.info.kind == "incremental" and p1.info.parent == p0.info.id
    assert p2.info.kind == "incremental" and p2.info.parent == p1.info.id
    assert p1.info.stats["bytes_read"] < 16 * 2**20 < p0.info.stats["bytes_read"]
    assert p1.info.stats["chunks_new"] < p0.info.stats["chunks_new"]


def test_restore_every_point(bkd: Daemon, points: list[Point]) -> None:
    """Each point restores to a new VM identical to its reference copy, checksum in the guest."""
    for index, point in enumerate(points):
        check_restore(bkd, point, f"r{index}")


def _manifest(d: Daemon, backup_id: str) -> dict[str, object]:
    [path] = (d.data_dir / "backups" / "backups").glob(f"*/{backup_id}.json")
    data: dict[str, object] = json.loads(path.read_text())
    return data


def _chunks(d: Daemon, backup_id: str) -> set[str]:
    disks = _manifest(d, backup_id)["disks"]
    assert isinstance(disks, dict)
    return {c for dm in disks.values() for c in dm["chunks"]} - {"zero"}


def _chunk_file(d: Daemon, chunk: str) -> Path:
    return d.data_dir / "backups" / "chunks" / chunk[:2] / f"{chunk}.zst"


def _verify(d: Daemon) -> dict[str, object]:
    done = run_op(d, calls.verify_backups())
    assert done.status == "success", done
    return done.result or {}


def test_corrupt_chunk_names_exactly_affected_backups(bkd: Daemon, points: list[Point]) -> None:
    """A flipped byte in a chunk only the last backup has: verify names it alone; a chunk all
    share: verify names all three; restoring a damaged backup refuses, listing the chunk."""
    ids = [p.info.id for p in points]
    assert _verify(bkd)["ok"] is True
    only_last = sorted(_chunks(bkd, ids[2]) - _chunks(bkd, ids[1]) - _chunks(bkd, ids[0]))[0]
    shared = sorted(_chunks(bkd, ids[0]) & _chunks(bkd, ids[1]) & _chunks(bkd, ids[2]))[0]
    for chunk, expected in ((only_last, [ids[2]]), (shared, sorted(ids))):
        path = _chunk_file(bkd, chunk)
        original = path.read_bytes()
        path.write_bytes(original[:-1] + bytes([original[-1] ^ 0xFF]))
        report = _verify(bkd)
        assert report["ok"] is False
        assert report["damaged_backups"] == expected
        assert report["damaged_chunks"] == [chunk]
        done = run_op(bkd, calls.restore_backup(ids[2], "damaged"))
        assert done.status == "failure" and done.error_code == "backup_damaged"
        assert chunk[:12] in (done.error_message or "")
        assert "damaged" not in [i.name for i in bkd.client.list_instances()]
        assert not (bkd.data_dir / "disks" / "damaged").exists()
        path.write_bytes(original)
    assert _verify(bkd)["ok"] is True


def test_prune_keeps_policy(bkd: Daemon, points: list[Point]) -> None:
    """keep-last 2 removes the oldest backup only; the survivors still verify and restore."""
    dry = run_op(bkd, calls.prune_backups(VM, dry_run=True, last=2))
    assert dry.result and dry.result["removed"] == [points[0].info.id]
    assert len(bkd.client.call(calls.list_backups(VM))) == 3
    done = run_op(bkd, calls.prune_backups(VM, last=2))
    assert done.status == "success" and done.result
    assert done.result["removed"] == [points[0].info.id]
    left = [b.id for b in bkd.client.call(calls.list_backups(VM))]
    assert left == [points[1].info.id, points[2].info.id]
    assert _verify(bkd)["ok"] is True
    check_restore(bkd, points[1], "pruned")


def test_restore_over_the_stopped_original(bkd: Daemon, points: list[Point]) -> None:
    """Restoring without a new name replaces the (stopped) VM's disks with the backup's."""
    write_random(bkd, VM, DATA, 512)
    assert guest_sum(bkd, VM, DATA) != points[2].digest
    bkd.action(VM, "stop", force=True)
    done = run_op(bkd, calls.restore_backup(points[2].info.id, None))
    assert done.status == "success" and done.result and done.result["replaced"], done
    cmp = subprocess.run(["qemu-img", "compare", str(points[2].ref), str(disk(bkd, VM))])
    assert cmp.returncode == 0
    boots = bkd.serial_log(VM).count("VIRTFLEET-READY")
    bkd.action(VM, "start")
    bkd.wait_marker(VM, count=boots + 1)
    assert guest_sum(bkd, VM, DATA) == points[2].digest


def test_bad_backup_requests(bkd: Daemon) -> None:
    """Unknown ids, bad ids, restoring onto an existing or running VM: clear 4xx errors."""
    with pytest.raises(ApiError) as err:
        bkd.client.call(calls.get_backup("20200101t000000z-000000"))
    assert err.value.code == "not_found"
    with pytest.raises(ApiError) as err:
        bkd.client.call(calls.get_backup("../../etc"))
    assert err.value.code == "invalid_input"
    latest = bkd.client.call(calls.list_backups(VM))[-1].id
    with pytest.raises(ApiError) as err:
        bkd.client.call(calls.restore_backup(latest, VM))
    assert err.value.code == "already_exists"
    with pytest.raises(ApiError) as err:
        bkd.client.call(calls.restore_backup(latest, None))
    assert err.value.code == "invalid_state"
    with pytest.raises(ApiError) as err:
        bkd.client.call(calls.create_backup("nosuchvm"))
    assert err.value.code == "not_found"
    bkd.create("fresh", start=False)  # never started: it has no disks to back up yet
    done = run_op(bkd, calls.create_backup("fresh"))
    assert done.status == "failure" and done.error_code == "conflict", done
    assert "start it once" in (done.error_message or "")


def test_schedules_api(bkd: Daemon) -> None:
    """Schedules are stored and listed; a bad cron expression or VM is a clear 4xx."""
    made = bkd.client.call(calls.put_schedule("nightly", VM, "0 3 * * *", daily=7))
    assert made.instance == VM and made.keep_daily == 7
    assert [s.name for s in bkd.client.call(calls.list_schedules())] == ["nightly"]
    for vm, cron, code in (
        (VM, "61 * * * *", "invalid_input"),
        ("nosuch", "0 3 * * *", "not_found"),
    ):
        with pytest.raises(ApiError) as err:
            bkd.client.call(calls.put_schedule("bad", vm, cron))
        assert err.value.code == code
    bkd.client.call(calls.delete_schedule("nightly"))
    assert bkd.client.call(calls.list_schedules()) == []


def test_snapshots_keep_the_next_backup_incremental(bkd: Daemon) -> None:
    """The dirty bitmap moves to the snapshot's new overlay (disk-only and with memory): the
    backup after a snapshot still reads only what changed, and restores exactly (bits from
    before the snapshot and writes after it both count)."""
    write_random(bkd, VM, DATA, 512, seek_kib=2048)
    before = backup_point(bkd, "snap-before")
    write_random(bkd, VM, DATA, 256, seek_kib=4096)  # recorded on the layer to be frozen
    done = run_op(bkd, calls.create_snapshot(VM, "s1"))
    assert done.status == "success", done
    write_random(bkd, VM, DATA, 256, seek_kib=512)  # recorded on the new overlay
    after = backup_point(bkd, "snap-after")
    assert after.info.kind == "incremental" and after.info.parent == before.info.id, after.info
    assert after.info.stats["bytes_read"] < 16 * 2**20
    check_restore(bkd, after, "snapinc")
    # with memory the switch happens at the end of the RAM save (QEMU's bitmaps stored away)
    done = run_op(bkd, calls.create_snapshot(VM, "s2", memory=True))
    assert done.status == "success", done
    write_random(bkd, VM, DATA, 128, seek_kib=3072)
    last = backup_point(bkd, "snap-mem")
    assert last.info.kind == "incremental" and last.info.parent == after.info.id, last.info
    check_restore(bkd, last, "snapmem")
    # The layer s2 froze keeps no bitmap: QEMU leaves it writable, and stored and reloaded
    # its bitmaps (with fdatasyncs) in every later pause. (s1's layer, frozen without a
    # memory save, QEMU reopened read-only: its copy is only read; the top's new bitmap
    # reaches the file when QEMU next stores them.)
    layers = _bitmaps_by_layer(bkd.data_dir / "disks" / VM / "root.qcow2")
    assert len(layers) >= 3 and not layers[1], layers


def _bitmaps_by_layer(top: Path) -> list[list[str]]:
    """The persistent bitmap names of each file of ``top``'s chain, top first."""
    info = subprocess.run(
        ["qemu-img", "info", "-U", "--backing-chain", "--output=json", str(top)],
        capture_output=True,
        check=True,
        text=True,
    )
    return [
        [b["name"] for b in layer.get("format-specific", {}).get("data", {}).get("bitmaps", [])]
        for layer in json.loads(info.stdout)
    ]
