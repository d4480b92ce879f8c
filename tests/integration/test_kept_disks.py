"""A VM deleted without ``--disks`` leaves its disk, and a new VM of that name never boots
it by accident: ``vm create`` and ``backup restore --to`` are refused naming it, and
``vm create --reuse-disks`` boots that very disk (a file written in the guest before the
delete is read back after)."""

from __future__ import annotations

import secrets
import subprocess

import pytest

from virtfleet.client import ApiError
from virtfleet.client import backups as calls

from .conftest import VIRTFLEET, Daemon, wait_for
from .guestdata import guest_run, run_op

VM = "keep"


def cli(d: Daemon, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [VIRTFLEET, "--data-dir", str(d.data_dir), *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=180)


@pytest.mark.integration
def test_recreate_is_refused_and_reuse_boots_the_old_disk(daemon: Daemon) -> None:
    mark = f"KEPT-{secrets.token_hex(4)}"
    daemon.create(VM)
    daemon.wait_marker(VM)
    guest_run(daemon, VM, f"echo {mark} > /root/mark")
    backup = run_op(daemon, calls.create_backup(VM))
    assert backup.status == "success", backup
    daemon.action(VM, "stop", force=True)
    assert cli(daemon, "vm", "delete", VM).returncode == 0
    disk = daemon.data_dir / "disks" / VM / "root.qcow2"
    inode = disk.stat().st_ino

    refused = cli(daemon, "vm", "create", VM, "--image", "tiny", "--start")
    assert refused.returncode != 0
    assert "[kept_disks]" in refused.stderr and "root.qcow2" in refused.stderr, refused.stderr
    assert "--reuse-disks" in refused.stderr
    assert [i.name for i in daemon.client.list_instances()] == []
    with pytest.raises(ApiError) as err:  # restoring to the name is refused too
        daemon.client.call(calls.restore_backup(str(backup.result["id"]), VM))
    assert err.value.code == "kept_disks"
    assert disk.stat().st_ino == inode

    reused = cli(daemon, "vm", "create", VM, "--image", "tiny", "--reuse-disks", "--start")
    assert reused.returncode == 0, reused.stderr
    daemon.wait_marker(VM)
    daemon.type_line(VM, "echo R$((1+1))-$(cat /root/mark)")
    wait_for(lambda: f"R2-{mark}" in daemon.serial_log(VM), 60, "the mark on the old disk")
    assert disk.stat().st_ino == inode
