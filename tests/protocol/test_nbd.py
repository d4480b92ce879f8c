"""The read-only NBD client and the dirty-range query against a real ``qemu-nbd`` server.

qemu-nbd speaks the same NBD server code as QEMU's built-in server that backups
read from, so the handshake, reads and bitmap ranges are checked for real here.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from virtfleet.drivers.qemu.nbd import NBDClient, export_ranges
from virtfleet.errors import DriverError
from virtfleet.storage.backup.chunks import ChunkStore
from virtfleet.storage.backup.ingest import ingest_ranges
from virtfleet.storage.backup.manifest import BackupStats, DiskManifest

MIB = 2**20


def _qemu_io(image: Path, cmd: str) -> None:
    subprocess.run(
        ["qemu-io", "-f", "qcow2", "-c", cmd, str(image)], check=True, capture_output=True
    )


@pytest.fixture()
def image(tmp_path: Path) -> Path:
    """8 MiB qcow2: 1 MiB of 0x11 at 0; a bitmap b0 records 64 KiB of 0x22 at 3 MiB + 10 KiB."""
    path = tmp_path / "d.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), "8M"], check=True)
    _qemu_io(path, "write -P 0x11 0 1M")
    subprocess.run(["qemu-img", "bitmap", "--add", str(path), "b0"], check=True)
    _qemu_io(path, f"write -P 0x22 {3 * MIB + 10240} 64k")  # the enabled bitmap records it
    subprocess.run(["qemu-img", "bitmap", "--disable", str(path), "b0"], check=True)
    return path


@pytest.fixture()
def served(image: Path, tmp_path: Path) -> Iterator[Path]:
    sock = tmp_path / "nbd.sock"
    argv = ["qemu-nbd", "--read-only", "--persistent", "--shared=4", "-f", "qcow2", "-x", "vd"]
    argv += ["-B", "b0"]
    proc = subprocess.Popen([*argv, f"--socket={sock}", str(image)])
    try:
        for _ in range(500):
            if sock.exists():
                break
            time.sleep(0.01)
        yield sock
    finally:
        proc.terminate()
        proc.wait(10)


def test_reads_what_the_image_holds(served: Path) -> None:
    with NBDClient(served, "vd") as client:
        assert client.size == 8 * MIB
        assert client.read(0, MIB) == b"\x11" * MIB
        assert client.read(MIB, 4096) == bytes(4096)
        block = client.read(3 * MIB, MIB)
    assert block[10240 : 10240 + 65536] == b"\x22" * 65536
    assert block[:10240] == bytes(10240)


def test_unknown_export_is_a_clear_error(served: Path) -> None:
    with pytest.raises(DriverError, match="nope"):
        NBDClient(served, "nope")


def test_no_server_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DriverError, match="NBD export"):
        NBDClient(tmp_path / "missing.sock", "vd")


def test_ranges_dirty_in_the_bitmap_and_ranges_with_data(served: Path) -> None:
    dirty = export_ranges(served, "vd", "b0")
    start, end = min(s for s, _ in dirty), max(s + n for s, n in dirty)
    # bitmap granularity is the 64 KiB cluster: the write spans two clusters
    assert (start, end) == (3 * MIB, 3 * MIB + 128 * 1024)
    data = export_ranges(served, "vd", None)
    assert sorted(data)[0] == (0, MIB)
    assert all(s < 3 * MIB + 128 * 1024 and s + n > 3 * MIB for s, n in sorted(data)[1:])


def test_ingest_reads_only_touched_chunks_and_inherits_the_rest(
    served: Path, tmp_path: Path
) -> None:
    store = ChunkStore(tmp_path / "chunks", tmp_path)
    (tmp_path / "chunks").mkdir()
    old = store.put(os.urandom(MIB))[0]
    parent = DiskManifest(size=8 * MIB, chunks=[old] * 8, bitmap="b")
    stats = BackupStats()
    ranges = export_ranges(served, "vd", "b0")
    with NBDClient(served, "vd") as client:
        chunks = ingest_ranges(client.read_ahead, ranges, 8 * MIB, store, parent, stats)
        assert store.get(chunks[3]) == client.read(3 * MIB, MIB)
    assert chunks[:3] == [old] * 3 and chunks[4:] == [old] * 4  # untouched: inherited
    assert stats.bytes_read == MIB and stats.chunks_total == 8
