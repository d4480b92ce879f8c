"""A tiny VM whose root disk lives on a shared-dir pool boots from it: the volume is a
linked clone of the image inside the pool, the guest writes to it, and QEMU holds its
image lock there (a second writer is refused, as across hosts)."""

from __future__ import annotations

import fcntl
import os
import shutil
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import Daemon, wait_for

VM = "onpool"


@pytest.fixture
def shared() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="vfpool", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.integration
def test_a_vm_boots_from_a_shared_dir_pool(daemon: Daemon, shared: Path) -> None:
    pool = daemon.client.create_pool({"name": "shared", "type": "shared-dir", "path": str(shared)})
    assert pool.capabilities.shared and pool.health == "ok"
    root = {"name": "root", "image": "tiny", "size_gib": 1, "pool": "shared", "boot": True}
    daemon.create(VM, disks=[root])
    daemon.wait_marker(VM)
    volume = shared / VM / "root.qcow2"
    assert str(volume) in Path(f"/proc/{daemon.qemu_pid(VM)}/cmdline").read_text()
    before = volume.stat().st_blocks
    daemon.type_line(
        VM, "dd if=/dev/urandom of=/dev/vda bs=1M count=4 seek=512 conv=fsync; echo W$((2+2))"
    )
    wait_for(lambda: "W4" in daemon.serial_log(VM), 60, "the guest's write")
    assert volume.stat().st_blocks > before  # written into the pool's volume
    # QEMU's image lock on the volume: another writer's lock on its bytes is refused.
    fd = os.open(volume, os.O_RDWR)
    try:
        with pytest.raises(OSError):
            flock = struct.pack("hhqqi4x", fcntl.F_WRLCK, os.SEEK_SET, 100, 1, 0)
            fcntl.fcntl(fd, fcntl.F_OFD_SETLK, flock)
    finally:
        os.close(fd)
    vols = daemon.client.list_volumes("shared")
    assert [(v.name, v.path) for v in vols] == [(f"{VM}/root", str(volume))]
