"""The utilization and consolidation report: allocated vs used over a window, and hints.

Owns the arithmetic and the wording: per running instance its average and peak CPU
(from history ``cpu_pct``) and memory (QEMU RSS, the host's view of what it costs),
the host's consolidation ratios (allocated vCPUs per core, allocated memory per host
memory), instances that are idle or oversized (candidates to shrink), and bottleneck
hints (pinned at a CPU cap, host memory pressure with balloons inflated, I/O stalls).
Pure over the history it is given: must not sample or write anything.
"""

from __future__ import annotations

from virtfleet.model.host import HostFacts
from virtfleet.model.instance import PowerState
from virtfleet.model.metrics import InstanceUsage, Series, UtilizationReport
from virtfleet.state.history import History
from virtfleet.state.repos import InstanceRecord

MIB = 1024 * 1024
IDLE_AVG_PCT = 5.0  # average CPU below this share of the allocation ...
IDLE_PEAK_PCT = 20.0  # ... and never above this: idle
OVERSIZED_MEMORY_PCT = 50.0  # peak memory use below this share of the allocation
CAPPED_THROTTLED_PCT = 25.0  # CFS periods throttled on average: pinned at its cap
PRESSURE_PCT = 5.0  # PSI avg10 that counts as pressure


def _avg(series: Series, metric: str) -> float | None:
    points = series.points.get(metric, [])
    return sum(p[1] for p in points) / len(points) if points else None


def _peak(series: Series, metric: str) -> float | None:
    points = series.points.get(metric, [])
    return max(p[2] for p in points) if points else None


def _usage(rec: InstanceRecord, series: Series) -> InstanceUsage:
    vcpus, memory_mib = rec.spec.vcpus, rec.spec.memory_mib
    cpu_avg, cpu_peak = _avg(series, "cpu_pct") or 0.0, _peak(series, "cpu_pct") or 0.0
    rss_avg = (_avg(series, "memory_rss_bytes") or 0.0) / MIB
    rss_peak = (_peak(series, "memory_rss_bytes") or 0.0) / MIB
    usage = InstanceUsage(
        name=rec.name,
        vcpus=vcpus,
        memory_mib=memory_mib,
        cpu_avg_pct=round(cpu_avg, 2),
        cpu_peak_pct=round(cpu_peak, 2),
        cpu_of_allocation_pct=round(cpu_avg / vcpus, 2),
        memory_used_avg_mib=round(rss_avg, 1),
        memory_used_peak_mib=round(rss_peak, 1),
        samples=max((len(p) for p in series.points.values()), default=0),
    )
    usage.findings = _findings(usage, series)
    return usage


def _findings(u: InstanceUsage, series: Series) -> list[str]:
    found: list[str] = []
    if u.samples == 0:
        return ["no samples in the window yet"]
    if not series.points.get("cpu_pct"):
        found.append("CPU use unknown (its process is not readable)")
    elif u.cpu_of_allocation_pct < IDLE_AVG_PCT and u.cpu_peak_pct / u.vcpus < IDLE_PEAK_PCT:
        found.append(
            f"idle: {u.cpu_of_allocation_pct:.1f} % of its {u.vcpus} vCPU(s) on average "
            f"(peak {u.cpu_peak_pct / u.vcpus:.1f} %); candidate to shrink or consolidate"
        )
    guest_avail = _avg(series, "guest_memory_available_bytes")
    used_peak = u.memory_used_peak_mib
    if guest_avail is not None:
        used_peak = u.memory_mib - guest_avail / MIB  # the guest's own view is better
    if used_peak and used_peak < u.memory_mib * OVERSIZED_MEMORY_PCT / 100:
        found.append(
            f"oversized memory: peak use {used_peak:.0f} MiB of {u.memory_mib} MiB allocated"
        )
    throttled = _avg(series, "cpu_throttled_pct")
    if throttled is not None and throttled > CAPPED_THROTTLED_PCT:
        found.append(f"pinned at its CPU cap: throttled in {throttled:.0f} % of CFS periods")
    return found


def _host_hints(host: Series, usages: list[InstanceUsage], balloons: list[str]) -> list[str]:
    hints: list[str] = []
    memory = _avg(host, "pressure_memory_some_avg10")
    if memory is not None and memory > PRESSURE_PCT:
        inflated = f"; balloons inflated on {', '.join(balloons)}" if balloons else ""
        hints.append(f"host under memory pressure: stalled {memory:.1f} % of the time{inflated}")
    io = _avg(host, "pressure_io_some_avg10")
    if io is not None and io > PRESSURE_PCT:
        hints.append(f"I/O contention: tasks stalled on I/O {io:.1f} % of the time")
    cpu = _avg(host, "pressure_cpu_some_avg10")
    if cpu is not None and cpu > 4 * PRESSURE_PCT:
        hints.append(f"CPU contention: runnable tasks waited {cpu:.1f} % of the time")
    capped = [u.name for u in usages if any(f.startswith("pinned") for f in u.findings)]
    if capped:
        hints.append(f"pinned at their CPU cap: {', '.join(capped)} (raise the cap or move)")
    return hints


def build_report(
    history: History, facts: HostFacts, records: list[InstanceRecord], window_s: int
) -> UtilizationReport:
    live = [r for r in records if r.status.power in (PowerState.RUNNING, PowerState.PAUSED)]
    series = {r.name: history.query(f"instance/{r.name}", window_s) for r in live}
    usages = [_usage(r, series[r.name]) for r in live]
    host = history.query("host", window_s)
    balloons = [
        r.name
        for r in live
        if (_avg(series[r.name], "balloon_actual_bytes") or r.spec.memory_mib * MIB)
        < r.spec.memory_mib * MIB
    ]
    cores, host_mib = max(1, facts.cpus), max(1, facts.memory_mib)
    vcpus = sum(u.vcpus for u in usages)
    used_cores = sum(u.cpu_avg_pct for u in usages) / 100
    host_used = _avg(host, "memory_used_bytes")
    return UtilizationReport(
        window_s=window_s,
        host_cpus=cores,
        host_memory_mib=host_mib,
        allocated_vcpus=vcpus,
        allocated_memory_mib=sum(u.memory_mib for u in usages),
        used_cpu_avg_cores=round(used_cores, 3),
        used_memory_avg_mib=round(sum(u.memory_used_avg_mib for u in usages), 1),
        host_cpu_avg_pct=_round(_avg(host, "cpu_pct")),
        host_memory_used_avg_pct=_round(
            100 * host_used / (host_mib * MIB) if host_used is not None else None
        ),
        cpu_consolidation_ratio=round(vcpus / cores, 2),
        memory_consolidation_ratio=round(sum(u.memory_mib for u in usages) / host_mib, 2),
        cpu_utilization_of_allocation_pct=round(100 * used_cores / vcpus, 2) if vcpus else 0.0,
        instances=usages,
        hints=_host_hints(host, usages, balloons),
    )


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)
