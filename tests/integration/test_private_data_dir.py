"""A real daemon booting a real VM keeps its data directory private: QEMU (as user
virtfleet-qemu) still reads its disks, sockets and logs, and nothing the daemon or QEMU
wrote can be read by other local users."""

from __future__ import annotations

import os
import stat

import pytest

from .conftest import Daemon

pytestmark = pytest.mark.integration
HARNESS_LOG = "daemon.log"  # opened by the test fixture before the daemon starts


def test_a_booted_vm_leaves_nothing_readable_by_others(daemon: Daemon) -> None:
    """After a VM with a cloud-init seed booted (so QEMU could use its files), every path
    under the data directory has no group or other bit (user-namespaced containers
    traverse to rootfs mounts in the runtime directory, not through it)."""
    daemon.create("priv", cloud_init={"user_data": "#cloud-config\npassword: s3cret\n"})
    daemon.wait_marker("priv")
    data = daemon.data_dir
    seed = data / "disks" / "priv" / "cidata.iso"
    assert b"s3cret" in seed.read_bytes()  # the secret-bearing file QEMU booted with
    assert stat.S_IMODE(os.lstat(data).st_mode) == 0o700
    open_to_others = {}
    for path in data.rglob("*"):
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode) or path.name == HARNESS_LOG:
            continue
        if stat.S_IMODE(st.st_mode) & 0o077:
            open_to_others[str(path.relative_to(data))] = oct(stat.S_IMODE(st.st_mode))
    assert open_to_others == {}
    assert "VIRTFLEET-READY" in daemon.serial_log("priv")
