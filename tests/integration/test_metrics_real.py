"""Metrics of a real TCG guest through the daemon: disk write bytes from query-blockstats,
vCPU threads, and a CPU-burning guest held to a 50 % cgroup cap showing about 50 %.

One guest is shared by the module (boots once; the disk test runs before the burn).
The cap is set on the guest's cgroup directly (util.cgroups, as the agent creates
it): switch ``_cap`` to the instance's CPU-limit field once instances have one.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from virtfleet.app.settings import Settings
from virtfleet.client import metrics_calls
from virtfleet.util.cgroups import CgroupManager

from .conftest import Daemon, _kill_qemus, wait_for

pytestmark = pytest.mark.integration
NAME = "mx"
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def guest(tiny_cache: Path) -> Iterator[Daemon]:
    """A daemon sampling every second, with one booted 1-vCPU tiny guest."""
    data_dir = Path(tempfile.mkdtemp(prefix="vfm", dir="/tmp"))
    d = Daemon(data_dir, ("--listen", "none", "--metrics-interval", "1"))
    d.start()
    try:
        op = d.client.build_image("tiny")
        assert d.client.wait_operation(op.id, timeout_s=300).status == "success"
        d.create(NAME, vcpus=1, memory_mib=256)
        d.wait_marker(NAME)
        yield d
    finally:
        d.stop()
        _kill_qemus(data_dir)
        shutil.rmtree(data_dir, ignore_errors=True)


def _latest(d: Daemon) -> dict[str, Any]:
    sample = d.client.call(metrics_calls.instance_metrics(NAME, "5m")).latest
    assert sample is not None
    return sample.model_dump()


def _fresh(d: Daemon, after: float) -> dict[str, Any]:
    """The first sample taken after ``after`` (epoch seconds)."""
    found: dict[str, Any] = {}

    def newer() -> bool:
        found.update(_latest(d))
        return bool(found["time"] > after)

    wait_for(newer, 30, "a new metrics sample")
    return found


def _cap(d: Daemon, pct: float | None) -> None:
    """Cap the guest's CPU at ``pct`` % of one core (None lifts the cap)."""
    manager = CgroupManager(f"virtfleet-{Settings(data_dir=d.data_dir).instance_id}")
    cgroup = manager.get(NAME)
    assert cgroup.enabled, cgroup.reason
    cgroup.set_cpu_quota(pct)


def test_disk_writes_show_in_blockstats_bytes(guest: Daemon) -> None:
    """Writing 24 MiB in the guest (synced) moves the root disk's write counter by
    about that much; the sample also names the vCPU thread and RSS."""
    before = _fresh(guest, time.time())
    guest.type_line(
        NAME, "dd if=/dev/zero of=/blob bs=1M count=24 && sync && echo DD-DONE-$((40+2))"
    )
    wait_for(lambda: "DD-DONE-42" in guest.serial_log(NAME), 90, "dd in the guest")
    after = _fresh(guest, time.time())
    written = (
        after["disks"]["root"]["write_bytes_total"] - before["disks"]["root"]["write_bytes_total"]
    )
    assert 24 * MIB <= written <= 48 * MIB, written  # data plus journal and metadata
    assert set(after["vcpu_seconds_total"]) == {"0"}  # "CPU 0/TCG" thread found by name
    assert after["memory_rss_bytes"] > 50 * MIB and after["balloon_actual_bytes"] == 256 * MIB
    assert after["accel"] == "tcg"


def test_cpu_burn_under_a_50_percent_cap_shows_about_50(guest: Daemon) -> None:
    """A guest spinning its one vCPU under a 50 % cap uses about half a core, by its
    cgroup and by its QEMU process, measured from the sampled counters over ~8 s;
    the CFS throttling is visible and /metrics (with the vCPU thread) passes promtool."""
    _cap(guest, 50.0)
    guest.type_line(NAME, "while :; do :; done &")
    time.sleep(3)  # let the loop start and the throttling settle
    first = _fresh(guest, time.time())
    time.sleep(8)
    last = _fresh(guest, time.time())
    span = last["time"] - first["time"]
    cgroup_pct = 100 * (last["cgroup_cpu_seconds_total"] - first["cgroup_cpu_seconds_total"]) / span
    process_pct = 100 * (last["cpu_seconds_total"] - first["cpu_seconds_total"]) / span
    vcpu_pct = 100 * (last["vcpu_seconds_total"]["0"] - first["vcpu_seconds_total"]["0"]) / span
    # Wide bounds: the cap is a ceiling (51 allows for accounting granularity), and the
    # machine is shared, so the guest may get less than its cap now and then.
    assert 30 <= cgroup_pct <= 55, cgroup_pct
    assert 30 <= process_pct <= 55, process_pct
    assert 20 <= vcpu_pct <= process_pct + 1, (vcpu_pct, process_pct)
    assert last["cpu_cap_pct"] == pytest.approx(50.0)
    assert last["cpu_throttled_pct"] is not None and last["cpu_throttled_pct"] > 20
    text = guest.client.call(metrics_calls.prometheus())
    assert f'virtfleet_instance_vcpu_seconds_total{{name="{NAME}",vcpu="0"}}' in text
    assert f'virtfleet_instance_cpu_limit_cores{{name="{NAME}"}} 0.5' in text
    check = subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )
    assert check.returncode == 0, check.stdout + check.stderr
    _cap(guest, None)
