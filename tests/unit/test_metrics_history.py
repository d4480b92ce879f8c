"""Metrics history rollups (fake clock), the report's findings, and the raw readers."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from virtfleet.drivers.qemu.stats import nic_backends
from virtfleet.errors import InvalidInputError
from virtfleet.host import sampling
from virtfleet.model.host import HostFacts
from virtfleet.model.instance import DesiredState, InstanceSpec, InstanceStatus, PowerState
from virtfleet.service.metrics import parse_duration
from virtfleet.service.report import build_report
from virtfleet.state.history import DEFAULT_TIERS, History, HistoryBackend, MemoryHistoryBackend
from virtfleet.state.history_sqlite import SQLiteHistoryBackend
from virtfleet.state.repos import InstanceRecord


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _sqlite(path: Path) -> sqlite3.Connection:
    """A connection set up like the store's (WAL, synchronous=NORMAL)."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = NORMAL")
    return db


def _backends(tmp_path: Path) -> list[HistoryBackend]:
    return [
        MemoryHistoryBackend(),
        SQLiteHistoryBackend(_sqlite(tmp_path / "h.db")),
    ]


@pytest.mark.parametrize(
    ("kind", "round_s", "every_s"), [("memory", 3600, 60), ("sqlite", 6 * 3600, 300)]
)
def test_rollups_stay_bounded_over_35_simulated_days(
    tmp_path: Path, kind: str, round_s: int, every_s: int
) -> None:
    """Two targets sampled for 35 days (one ``record`` call per ``round_s``) keep at most
    their tiers' buckets each, fill the 10-minute tier, and answer a 30-day query."""
    backend = _backends(tmp_path)[0 if kind == "memory" else 1]
    clock = Clock(1_699_999_200.0)  # a whole day: day buckets line up with rounds
    history = History(backend, clock=clock)
    bound = 2 * history.max_rows_per_target
    for _ in range(35 * 86400 // round_s):
        rows = []
        for i in range(round_s // every_s):
            value = (i % 6) * 10.0  # 0, 10, .. 50, 0, ...
            ts = clock.now + every_s * i
            rows += [("host", ts, {"cpu_pct": 50.0}), ("instance/a", ts, {"cpu_pct": value})]
        history.record(rows)
        clock.now += round_s
        assert backend.count() <= bound
    assert backend.count() >= 2 * DEFAULT_TIERS[2].buckets * 0.99  # really full, not small
    month = history.query("instance/a", 30 * 86400, 86400)
    assert month.tier_step_s == 600 and len(month.points["cpu_pct"]) in (30, 31)
    day = month.points["cpu_pct"][-2]
    assert day[2] == 50.0 and 20.0 < day[1] < 30.0  # about the average of 0..50


def test_query_picks_the_tier_and_rebuilds_steps() -> None:
    """Averages and maxima of coarser steps are exact; range and step are validated."""
    clock = Clock(1_080_000.0)  # whole hours: steps line up with the range
    history = History(MemoryHistoryBackend(), clock=clock)
    for i in range(360):  # one hour of 10 s samples, value = minute number
        history.record([("host", clock.now - 3600 + 10 * i, {"x": float(i // 6)})])
    series = history.query("host", 3600, 300)
    assert (series.tier_step_s, series.step_s) == (60, 300)
    first = series.points["x"][1]
    assert first[1] == pytest.approx(first[2] - 2)  # 5 minutes m..m+4: avg m+2, max m+4
    assert history.query("host", 600).tier_step_s == 10
    for bad in ((0, None), (31 * 86400, None), (3600, 0), (86400 * 30, 1)):
        with pytest.raises(InvalidInputError):
            history.query("host", *bad)


def test_history_continues_a_bucket_after_a_restart(tmp_path: Path) -> None:
    """A new History over the same SQLite table folds into the open bucket, not over it."""
    db = sqlite3.connect(tmp_path / "h.db", isolation_level=None)
    clock = Clock(600_000.0)
    History(SQLiteHistoryBackend(db), clock=clock).record([("host", clock.now, {"x": 1.0})])
    again = History(SQLiteHistoryBackend(db), clock=clock)
    again.record([("host", clock.now + 20, {"x": 3.0})])
    point = again.query("host", 3600, 600).points["x"][-1]
    assert point[1:] == (2.0, 3.0)


def test_parse_duration() -> None:
    assert [parse_duration(t, "r") for t in ("90", "90s", "15m", "1h", "7d", "1.5h")] == [
        90,
        90,
        900,
        3600,
        604800,
        5400,
    ]
    for bad in ("", "1w", "-5m", "0", "1 h x"):
        with pytest.raises(InvalidInputError):
            parse_duration(bad, "range")


def _record(name: str, vcpus: int, memory_mib: int) -> InstanceRecord:
    spec = InstanceSpec(name=name, vcpus=vcpus, memory_mib=memory_mib, image="tiny")
    status = InstanceStatus(power=PowerState.RUNNING, pid=1)
    return InstanceRecord(spec=spec, desired=DesiredState(), status=status)


def test_report_findings_and_hints() -> None:
    """Idle and oversized instances are named, a capped one is flagged, memory pressure hinted."""
    clock = Clock(2_000_000.0)
    history = History(MemoryHistoryBackend(), clock=clock)
    mib = 1024 * 1024
    for i in range(30):
        ts = clock.now - 300 + 10 * i
        history.record(
            [
                ("instance/idle", ts, {"cpu_pct": 1.0, "memory_rss_bytes": 100.0 * mib}),
                (
                    "instance/busy",
                    ts,
                    {"cpu_pct": 195.0, "memory_rss_bytes": 900.0 * mib, "cpu_throttled_pct": 70.0},
                ),
                ("host", ts, {"cpu_pct": 60.0, "pressure_memory_some_avg10": 20.0}),
            ]
        )
    facts = HostFacts(cpus=2, memory_mib=4096)
    report = build_report(history, facts, [_record("idle", 2, 1024), _record("busy", 2, 1024)], 600)
    by_name = {u.name: u for u in report.instances}
    assert report.cpu_consolidation_ratio == 2.0 and report.allocated_memory_mib == 2048
    assert report.used_cpu_avg_cores == pytest.approx(1.96)
    assert any(f.startswith("idle") for f in by_name["idle"].findings)
    assert any(f.startswith("oversized memory") for f in by_name["idle"].findings)
    assert any(f.startswith("pinned at its CPU cap") for f in by_name["busy"].findings)
    assert not any(f.startswith("idle") for f in by_name["busy"].findings)
    assert any("memory pressure" in h for h in report.hints)
    assert any("busy" in h and "CPU cap" in h for h in report.hints)


def test_cgroup_readers_v1_and_v2(tmp_path: Path) -> None:
    """CPU time, cap, throttling, memory and pids from v1 and v2 cgroup files."""
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "cpu.stat").write_text("usage_usec 2500000\nnr_periods 10\nnr_throttled 4\n")
    (v2 / "cpu.max").write_text("50000 100000\n")
    (v2 / "memory.current").write_text("1048576\n")
    (v2 / "pids.current").write_text("7\n")
    (v2 / "io.stat").write_text("8:0 rbytes=100 wbytes=300 rios=1 wios=3\n")
    got = sampling.cgroup_counters({"cpu": v2, "memory": v2, "pids": v2}, unified=True)
    assert (got.cpu_seconds_total, got.cpu_cap_pct, got.throttled_periods_total) == (2.5, 50.0, 4)
    assert (got.memory_bytes, got.pids, got.io_write_bytes_total) == (1048576, 7, 300)
    cpu, acct = tmp_path / "cpu", tmp_path / "cpuacct"
    cpu.mkdir()
    acct.mkdir()
    (acct / "cpuacct.usage").write_text("3000000000\n")
    (cpu / "cpu.cfs_quota_us").write_text("-1\n")
    (cpu / "cpu.cfs_period_us").write_text("100000\n")
    (cpu / "cpu.stat").write_text("nr_periods 0\nnr_throttled 0\nthrottled_time 0\n")
    got = sampling.cgroup_counters({"cpu": cpu, "cpuacct": acct}, unified=False)
    assert (got.cpu_seconds_total, got.cpu_cap_pct, got.memory_bytes) == (3.0, None, None)


def test_psi_and_nic_backends(tmp_path: Path) -> None:
    (tmp_path / "memory").write_text(
        "some avg10=1.50 avg60=0.00 avg300=0.00 total=1\nfull avg10=0.25 avg60=0 avg300=0 total=1\n"
    )
    assert sampling.pressure(tmp_path) == {"memory_some_avg10": 1.5, "memory_full_avg10": 0.25}
    argv = [
        "qemu",
        "-netdev",
        "user,id=net0,restrict=on",
        "-netdev",
        "tap,id=net1,ifname=vf1,script=no",
    ]
    assert nic_backends(argv) == ({"net1": "vf1"}, ["net0"])


def test_process_counters_of_this_process() -> None:
    """The reader sees our own CPU time and RSS (no vCPU threads here); a gone pid is None."""
    me = sampling.process_counters(__import__("os").getpid())
    assert me is not None and me.cpu_seconds_total > 0 and me.rss_bytes > 0
    assert me.vcpu_seconds_total == {}
    assert sampling.process_counters(10**7) is None


def test_tap_counters_read_sysfs() -> None:
    """Interface counters come from sysfs (``lo`` stands in for a VM's tap here)."""
    lo = sampling.tap_counters("lo")
    assert lo is not None and lo.rx_bytes_total >= 0 and lo.tx_packets_total >= 0
    assert sampling.tap_counters("vf-no-such-tap") is None
