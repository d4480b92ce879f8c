"""``cluster init`` on a real daemon with a running tiny VM: the daemon re-executes itself
on the etcd store (same process id), the member runs with TLS from the cluster CA, and
the guest's QEMU is re-adopted — the same pid before and after, never restarted."""

from __future__ import annotations

import asyncio
import contextlib
import json

import pytest

from tests.etcdlab import free_port
from virtfleet.client.errors import ApiError
from virtfleet.host.etcdmember import EtcdMember, load_config

from .conftest import Daemon, wait_for

pytestmark = pytest.mark.integration


def _on_etcd(d: Daemon) -> bool:
    with contextlib.suppress(ApiError, OSError):
        return d.client.cluster_status().store == "etcd"
    return False


def test_init_keeps_the_running_vm_and_the_daemon_process(daemon: Daemon) -> None:
    d = daemon
    d.create("vm1")
    d.wait_marker("vm1")
    qemu = d.qemu_pid("vm1")
    assert d.proc is not None
    try:
        done = d.client.cluster_init(
            address="127.0.0.1", client_port=free_port(), peer_port=free_port()
        )
        assert done.restarting is True and done.keys_copied > 0
        wait_for(lambda: _on_etcd(d), 60, "the daemon back on etcd")
        assert d.proc.poll() is None  # re-executed in place, not exited
        assert d.qemu_pid("vm1") == qemu
        found = d.client.get_instance("vm1")
        assert found.status.power == "running" and found.status.reason == "re-adopted"
        status = d.client.cluster_status()
        assert [m.client_urls for m in status.members] == [[done.client_url]]
        assert json.loads((d.data_dir / "cluster" / "store.json").read_text())["store"] == (
            f"etcd+{done.client_url}"
        )
    finally:
        d.stop()
        config = load_config(d.data_dir / "cluster")
        if config is not None:  # the member outlives the daemon: end it here
            asyncio.run(EtcdMember(d.data_dir, config).stop())
