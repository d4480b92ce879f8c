"""Reading this host's counters: processes and their vCPU threads, cgroups, taps, the host.

Owns the raw reads the metrics collector (host/collector.py) turns into samples:
psutil for processes and the host, ``/proc/<pid>/task/*/comm`` for QEMU's vCPU thread
names (``CPU 0/TCG``, ``CPU 1/KVM``: QEMU runs with ``debug-threads=on``), cgroup
files (v1 and v2) for any instance that has a cgroup -- a VM's QEMU or a container's
processes alike -- ``/sys/class/net/<if>/statistics`` for taps and ``/proc/pressure``
for PSI. Every function is synchronous and cheap (a few /proc reads); callers run
them off the event loop. Must not write anything or keep state.
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from virtfleet.model.metrics import NicIO

_VCPU_THREAD = re.compile(r"^CPU (\d+)/(TCG|KVM|HVF|WHPX)$")
_PSI_RESOURCES = ("cpu", "memory", "io")


@dataclass
class ProcessCounters:
    cpu_seconds_total: float
    rss_bytes: int
    vcpu_seconds_total: dict[str, float] = field(default_factory=dict)


def process_counters(pid: int) -> ProcessCounters | None:
    """CPU time of ``pid`` (all threads) and of each vCPU thread, and its RSS; None if gone."""
    try:
        proc = psutil.Process(pid)
        with proc.oneshot():
            times = proc.cpu_times()
            rss = proc.memory_info().rss
            threads = proc.threads()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None
    vcpus: dict[str, float] = {}
    for thread in threads:
        match = _VCPU_THREAD.match(_thread_name(pid, thread.id))
        if match:
            vcpus[match.group(1)] = thread.user_time + thread.system_time
    return ProcessCounters(times.user + times.system, rss, vcpus)


def _thread_name(pid: int, tid: int) -> str:
    try:
        with open(f"/proc/{pid}/task/{tid}/comm") as fh:
            return fh.read().strip()
    except OSError:
        return ""


@dataclass
class CgroupCounters:
    """What an instance's cgroup shows; None where its controller is missing."""

    cpu_seconds_total: float | None = None
    cpu_cap_pct: float | None = None
    periods_total: int | None = None
    throttled_periods_total: int | None = None
    memory_bytes: int | None = None
    pids: int | None = None
    io_read_bytes_total: int | None = None
    io_write_bytes_total: int | None = None


def cgroup_counters(dirs: dict[str, Path], unified: bool) -> CgroupCounters:
    """Read a cgroup given its controller -> directory map (``InstanceCgroup.dirs``)."""
    out = CgroupCounters()
    cpu = dirs.get("cpu")
    if unified and cpu is not None:
        _v2_cpu(cpu, out)
    elif cpu is not None:
        _v1_cpu(cpu, dirs.get("cpuacct"), out)
    memory = dirs.get("memory")
    if memory is not None:
        out.memory_bytes = _int(memory / ("memory.current" if unified else "memory.usage_in_bytes"))
    pids = dirs.get("pids")
    if pids is not None:
        out.pids = _int(pids / "pids.current")
    if unified and cpu is not None:
        _v2_io(cpu / "io.stat", out)
    elif dirs.get("blkio") is not None:
        _v1_io(dirs["blkio"] / "blkio.throttle.io_service_bytes", out)
    return out


def _v2_cpu(path: Path, out: CgroupCounters) -> None:
    stat = _keyed(path / "cpu.stat")
    if "usage_usec" in stat:
        out.cpu_seconds_total = stat["usage_usec"] / 1e6
    out.periods_total, out.throttled_periods_total = (
        stat.get("nr_periods"),
        stat.get("nr_throttled"),
    )
    quota, _, period = (_text(path / "cpu.max") or "max").partition(" ")
    if quota != "max" and period:
        out.cpu_cap_pct = 100.0 * int(quota) / int(period)


def _v1_cpu(path: Path, acct: Path | None, out: CgroupCounters) -> None:
    usage = _int(acct / "cpuacct.usage") if acct is not None else None
    out.cpu_seconds_total = usage / 1e9 if usage is not None else None
    stat = _keyed(path / "cpu.stat")
    out.periods_total, out.throttled_periods_total = (
        stat.get("nr_periods"),
        stat.get("nr_throttled"),
    )
    quota, period = _int(path / "cpu.cfs_quota_us"), _int(path / "cpu.cfs_period_us")
    if quota is not None and quota > 0 and period:
        out.cpu_cap_pct = 100.0 * quota / period


def _v2_io(path: Path, out: CgroupCounters) -> None:
    text = _text(path)
    if text is None:
        return
    read = write = 0
    for line in text.splitlines():
        fields = dict(f.partition("=")[::2] for f in line.split()[1:])
        read += int(fields.get("rbytes", 0))
        write += int(fields.get("wbytes", 0))
    out.io_read_bytes_total, out.io_write_bytes_total = read, write


def _v1_io(path: Path, out: CgroupCounters) -> None:
    text = _text(path)
    if text is None:
        return
    read = write = 0
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] in ("Read", "Write"):
            if parts[1] == "Read":
                read += int(parts[2])
            else:
                write += int(parts[2])
    out.io_read_bytes_total, out.io_write_bytes_total = read, write


def tap_counters(ifname: str) -> NicIO | None:
    """Counters of a host interface (a VM's tap); None if it does not exist."""
    base = Path("/sys/class/net") / ifname / "statistics"
    values = {k: _int(base / k) for k in ("rx_bytes", "tx_bytes", "rx_packets", "tx_packets")}
    if any(v is None for v in values.values()):
        return None
    return NicIO(
        rx_bytes_total=values["rx_bytes"] or 0,
        tx_bytes_total=values["tx_bytes"] or 0,
        rx_packets_total=values["rx_packets"] or 0,
        tx_packets_total=values["tx_packets"] or 0,
    )


def pressure(root: Path = Path("/proc/pressure")) -> dict[str, float]:
    """PSI ``avg10`` per resource and kind (``memory_some_avg10``...); {} without PSI."""
    found: dict[str, float] = {}
    for resource in _PSI_RESOURCES:
        for line in (_text(root / resource) or "").splitlines():
            kind, *fields = line.split()
            for item in fields:
                key, _, value = item.partition("=")
                if key == "avg10":
                    found[f"{resource}_{kind}_avg10"] = float(value)
    return found


@dataclass
class HostCounters:
    cpus: int
    cpu_seconds_total: dict[str, float]
    busy_seconds_total: float
    idle_seconds_total: float
    load: tuple[float, float, float]
    memory_total_bytes: int
    memory_available_bytes: int
    swap_used_bytes: int
    disk_read_bytes_total: int
    disk_write_bytes_total: int
    net_rx_bytes_total: int
    net_tx_bytes_total: int
    pressure: dict[str, float]


def host_counters() -> HostCounters:
    times = psutil.cpu_times()
    modes = {k: float(v) for k, v in times._asdict().items()}
    idle = modes.get("idle", 0.0) + modes.get("iowait", 0.0)
    # guest/guest_nice are already inside user/nice on Linux: don't count them twice.
    total = sum(v for k, v in modes.items() if k not in ("guest", "guest_nice"))
    mem, swap = psutil.virtual_memory(), psutil.swap_memory()
    disk = psutil.disk_io_counters()
    nics = psutil.net_io_counters(pernic=True)
    rx = sum(n.bytes_recv for name, n in nics.items() if name != "lo")
    tx = sum(n.bytes_sent for name, n in nics.items() if name != "lo")
    return HostCounters(
        cpus=psutil.cpu_count() or 1,
        cpu_seconds_total=modes,
        busy_seconds_total=total - idle,
        idle_seconds_total=idle,
        load=os.getloadavg(),
        memory_total_bytes=mem.total,
        memory_available_bytes=mem.available,
        swap_used_bytes=swap.used,
        disk_read_bytes_total=disk.read_bytes if disk else 0,
        disk_write_bytes_total=disk.write_bytes if disk else 0,
        net_rx_bytes_total=rx,
        net_tx_bytes_total=tx,
        pressure=pressure(),
    )


def _text(path: Path) -> str | None:
    with contextlib.suppress(OSError):
        return path.read_text()
    return None


def _int(path: Path) -> int | None:
    text = _text(path)
    try:
        return int(text.strip()) if text is not None else None
    except ValueError:
        return None


def _keyed(path: Path) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in (_text(path) or "").splitlines():
        key, _, value = line.partition(" ")
        with contextlib.suppress(ValueError):
            out[key] = int(value)
    return out
