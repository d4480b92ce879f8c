"""The metrics collector: every ``interval_s`` one sample of the host and of each instance.

Owns turning raw counters (host/sampling.py, the driver's ``SupportsStats``) into
``InstanceSample``/``HostSample`` with rates over the last interval, holding the latest
samples, and handing each round to its sinks (history, alerts) in order. A sink that
fails is logged, never stops collection. The /proc and cgroup reads of a round run in
one worker thread; QMP queries run concurrently on the loop, each bounded in time.

Instances are found in the store (status running or paused, with a pid); their
cgroup through ``cgroups.get(name)`` -- the same for a VM's QEMU and a container's
processes, so a container source plugs in by having a cgroup and a pid. Must not
write instance state or decide anything about alerts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from virtfleet.drivers.base import Driver
from virtfleet.drivers.stats import DriverStats, SupportsStats
from virtfleet.errors import VirtfleetError
from virtfleet.host import sampling
from virtfleet.model.host import HostFacts
from virtfleet.model.instance import PowerState
from virtfleet.model.metrics import DiskIO, HostSample, InstanceSample, NicIO
from virtfleet.state.repos import InstanceRecord, InstanceRepo

log = logging.getLogger(__name__)
DEFAULT_INTERVAL_S = 10.0
STATS_TIMEOUT_S = 2.0
Sink = Callable[[HostSample, list[InstanceSample]], Awaitable[None]]
_LIVE = (PowerState.RUNNING, PowerState.PAUSED)


@dataclass
class _Raw:
    """What the worker thread read for one instance."""

    record: InstanceRecord
    process: sampling.ProcessCounters | None = None
    cgroup: sampling.CgroupCounters | None = None
    taps: dict[str, NicIO] = field(default_factory=dict)


class MetricsCollector:
    def __init__(
        self,
        repo: InstanceRepo,
        driver: Callable[[], Driver],  # the agent's current driver (tests swap it)
        facts: HostFacts,
        cgroups: Any = None,  # util.cgroups.CgroupManager or None
        interval_s: float = DEFAULT_INTERVAL_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.repo = repo
        self.driver = driver
        self.facts = facts
        self.cgroups = cgroups
        self.interval_s = interval_s
        self.clock = clock
        self.sinks: list[Sink] = []
        self.latest: dict[str, InstanceSample] = {}
        self.host_latest: HostSample | None = None
        self.rounds = 0
        self._prev: dict[str, InstanceSample] = {}
        self._host_prev: tuple[float, sampling.HostCounters] | None = None
        self._task: asyncio.Task[None] | None = None
        self._taps: dict[str, dict[str, str]] = {}  # name -> NIC id -> tap (from the driver)
        self._periods: dict[str, tuple[int, int]] = {}  # name -> CFS (periods, throttled)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="metrics-collector")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        while True:
            started = time.monotonic()
            try:
                await self.collect_once()
            except Exception:
                log.exception("metrics collection failed")
            await asyncio.sleep(max(0.0, self.interval_s - (time.monotonic() - started)))

    async def collect_once(self) -> tuple[HostSample, list[InstanceSample]]:
        """One round: sample everything, keep it as ``latest``, feed the sinks."""
        records = [r for r in await self.repo.list() if r.status.power in _LIVE and r.status.pid]
        stats = await self._driver_stats(records)
        now = self.clock()
        raws, host = await asyncio.to_thread(self._read, records)
        samples = [self._instance(raw, stats.get(raw.record.name), now) for raw in raws]
        host_sample = self._host(host, now, len(samples))
        self.latest = {s.name: s for s in samples}
        self._prev = dict(self.latest)
        self.host_latest = host_sample
        self.rounds += 1
        for sink in self.sinks:
            try:
                await sink(host_sample, samples)
            except Exception:
                log.exception("metrics sink %r failed", sink)
        return host_sample, samples

    async def _driver_stats(self, records: list[InstanceRecord]) -> dict[str, DriverStats]:
        current = self.driver()
        if not isinstance(current, SupportsStats):
            return {}
        driver: SupportsStats = current

        async def one(name: str) -> DriverStats:
            try:
                return await asyncio.wait_for(driver.stats(name), STATS_TIMEOUT_S)
            except (VirtfleetError, TimeoutError) as err:
                why = err.message if isinstance(err, VirtfleetError) else "timed out"
                return DriverStats(unavailable={"driver": f"driver stats: {why}"})

        found = await asyncio.gather(*(one(r.name) for r in records))
        result = dict(zip((r.name for r in records), found, strict=True))
        self._taps = {name: s.taps for name, s in result.items()}
        return result

    def _read(self, records: list[InstanceRecord]) -> tuple[list[_Raw], sampling.HostCounters]:
        """The blocking part of a round (worker thread): /proc, cgroup and sysfs reads."""
        raws = []
        for rec in records:
            raw = _Raw(rec, sampling.process_counters(rec.status.pid or 0))
            if self.cgroups is not None:
                cg = self.cgroups.get(rec.name)
                if cg.enabled:
                    raw.cgroup = sampling.cgroup_counters(cg.dirs, cg.unified)
            for nic, tap in self._taps.get(rec.name, {}).items():
                counters = sampling.tap_counters(tap)
                if counters is not None:
                    raw.taps[nic] = counters
            raws.append(raw)
        return raws, sampling.host_counters()

    def _instance(self, raw: _Raw, stats: DriverStats | None, now: float) -> InstanceSample:
        rec, proc, cg = raw.record, raw.process, raw.cgroup
        stats = stats or DriverStats()
        sample = InstanceSample(
            name=rec.name,
            time=now,
            kind=rec.spec.kind,
            power=rec.status.power.value,
            accel=rec.status.accel.value if rec.status.accel else "",
            vcpus=rec.spec.vcpus,
            memory_mib=rec.spec.memory_mib,
            pid=rec.status.pid,
            balloon_actual_bytes=stats.balloon_actual_bytes,
            guest_memory=stats.guest_memory,
            disks=stats.disks,
            nics=raw.taps,
            unavailable=dict(stats.unavailable),
        )
        if proc is not None:
            sample.cpu_seconds_total = proc.cpu_seconds_total
            sample.vcpu_seconds_total = proc.vcpu_seconds_total
            sample.memory_rss_bytes = proc.rss_bytes
        else:
            sample.unavailable["process"] = f"process {rec.status.pid} not readable"
        if cg is not None:
            sample.cgroup_cpu_seconds_total = cg.cpu_seconds_total
            sample.cgroup_memory_bytes = cg.memory_bytes
            sample.cpu_cap_pct = cg.cpu_cap_pct
            sample.pids = cg.pids
        else:
            sample.unavailable["cgroup"] = "no cgroup for this instance"
        _rates(sample, self._prev.get(rec.name), cg)
        self._keep_throttle(sample, cg)
        return sample

    def _keep_throttle(self, sample: InstanceSample, cg: sampling.CgroupCounters | None) -> None:
        """Remember CFS period counters (not part of the sample) for the next round."""
        if cg is None or cg.periods_total is None:
            return
        prev = self._periods.get(sample.name)
        self._periods[sample.name] = (cg.periods_total, cg.throttled_periods_total or 0)
        if prev is not None and cg.periods_total > prev[0]:
            throttled = (cg.throttled_periods_total or 0) - prev[1]
            sample.cpu_throttled_pct = round(100.0 * throttled / (cg.periods_total - prev[0]), 2)

    def _host(self, now_counters: sampling.HostCounters, now: float, running: int) -> HostSample:
        c = now_counters
        sample = HostSample(
            time=now,
            hostname=self.facts.hostname,
            cpus=c.cpus,
            cpu_seconds_total=c.cpu_seconds_total,
            load1=c.load[0],
            load5=c.load[1],
            load15=c.load[2],
            memory_total_bytes=c.memory_total_bytes,
            memory_available_bytes=c.memory_available_bytes,
            memory_available_pct=round(
                100.0 * c.memory_available_bytes / max(1, c.memory_total_bytes), 2
            ),
            swap_used_bytes=c.swap_used_bytes,
            disk_read_bytes_total=c.disk_read_bytes_total,
            disk_write_bytes_total=c.disk_write_bytes_total,
            net_rx_bytes_total=c.net_rx_bytes_total,
            net_tx_bytes_total=c.net_tx_bytes_total,
            pressure=c.pressure,
            kvm_usable=self.facts.kvm.usable,
            instances_running=running,
        )
        if not c.pressure:
            sample.unavailable["pressure"] = "no /proc/pressure (kernel without PSI)"
        if self._host_prev is not None:
            _host_rates(sample, c, *self._host_prev, now)
        self._host_prev = (now, c)
        return sample


def _rate(now: float | None, before: float | None, dt: float) -> float | None:
    if now is None or before is None or dt <= 0 or now < before:
        return None  # a counter going back means a restarted process: no rate this round
    return round((now - before) / dt, 3)


def _pct(now: float | None, before: float | None, dt: float) -> float | None:
    rate = _rate(now, before, dt)
    return None if rate is None else round(100.0 * rate, 2)


def _rates(sample: InstanceSample, prev: InstanceSample | None, cg: Any) -> None:
    if prev is None or prev.pid != sample.pid:
        return
    dt = sample.time - prev.time
    sample.cpu_pct = _pct(sample.cpu_seconds_total, prev.cpu_seconds_total, dt)
    sample.cgroup_cpu_pct = _pct(sample.cgroup_cpu_seconds_total, prev.cgroup_cpu_seconds_total, dt)
    for vcpu, secs in sample.vcpu_seconds_total.items():
        pct = _pct(secs, prev.vcpu_seconds_total.get(vcpu), dt)
        if pct is not None:
            sample.vcpu_pct[vcpu] = pct
    for name, disk in sample.disks.items():
        old: DiskIO | None = prev.disks.get(name)
        if old is not None:
            disk.read_bps = _rate(disk.read_bytes_total, old.read_bytes_total, dt)
            disk.write_bps = _rate(disk.write_bytes_total, old.write_bytes_total, dt)
    for name, nic in sample.nics.items():
        was: NicIO | None = prev.nics.get(name)
        if was is not None:
            nic.rx_bps = _rate(nic.rx_bytes_total, was.rx_bytes_total, dt)
            nic.tx_bps = _rate(nic.tx_bytes_total, was.tx_bytes_total, dt)


def _host_rates(
    sample: HostSample,
    c: sampling.HostCounters,
    before_t: float,
    before: sampling.HostCounters,
    now: float,
) -> None:
    dt = now - before_t
    busy = c.busy_seconds_total - before.busy_seconds_total
    total = busy + c.idle_seconds_total - before.idle_seconds_total
    sample.cpu_pct = round(100.0 * busy / total, 2) if total > 0 else None
    sample.disk_read_bps = _rate(c.disk_read_bytes_total, before.disk_read_bytes_total, dt)
    sample.disk_write_bps = _rate(c.disk_write_bytes_total, before.disk_write_bytes_total, dt)
    sample.net_rx_bps = _rate(c.net_rx_bytes_total, before.net_rx_bytes_total, dt)
    sample.net_tx_bps = _rate(c.net_tx_bytes_total, before.net_tx_bytes_total, dt)
