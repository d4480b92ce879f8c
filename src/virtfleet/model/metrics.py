"""Metrics, alerts and the utilization report as users see them. Pure data, no I/O.

Units are in the field names (``_bytes``, ``_pct``, ``_seconds_total``, ``_bps``).
``*_total`` fields are monotonic counters since the process started; ``*_pct`` and
``*_bps`` are rates over the last collection interval (None on the first sample).
``unavailable`` names what could not be measured for this instance and why, so a
missing number is never silently zero.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from virtfleet.model.names import NameStr


class DiskIO(BaseModel):
    """One block device of a VM (QMP ``query-blockstats``) or a container's cgroup I/O."""

    read_bytes_total: int = 0
    write_bytes_total: int = 0
    read_ops_total: int = 0
    write_ops_total: int = 0
    read_bps: float | None = None
    write_bps: float | None = None


class NicIO(BaseModel):
    """One NIC's host-side counters (the tap device's, from the host's point of view
    ``rx`` is what the guest sent)."""

    rx_bytes_total: int = 0
    tx_bytes_total: int = 0
    rx_packets_total: int = 0
    tx_packets_total: int = 0
    rx_bps: float | None = None
    tx_bps: float | None = None


class InstanceSample(BaseModel):
    """One collection of one running instance."""

    name: str
    time: float  # seconds since the epoch
    kind: Literal["vm", "container"] = "vm"
    power: str = "running"
    accel: str = ""
    vcpus: int = 1
    memory_mib: int = 0
    pid: int | None = None
    cpu_seconds_total: float | None = None  # the whole QEMU process (psutil)
    cpu_pct: float | None = None  # of one core; 2 busy cores = 200
    vcpu_seconds_total: dict[str, float] = Field(default_factory=dict)  # "0" -> s
    vcpu_pct: dict[str, float] = Field(default_factory=dict)
    cgroup_cpu_seconds_total: float | None = None
    cgroup_cpu_pct: float | None = None
    cpu_cap_pct: float | None = None  # the cgroup quota, % of one core (None: no cap)
    cpu_throttled_pct: float | None = None  # share of CFS periods that hit the cap
    memory_rss_bytes: int | None = None
    cgroup_memory_bytes: int | None = None
    balloon_actual_bytes: int | None = None
    guest_memory: dict[str, int] = Field(default_factory=dict)  # virtio-balloon guest stats
    pids: int | None = None
    disks: dict[str, DiskIO] = Field(default_factory=dict)
    nics: dict[str, NicIO] = Field(default_factory=dict)
    unavailable: dict[str, str] = Field(default_factory=dict)

    def history_values(self) -> dict[str, float | None]:
        """The flat ``metric -> value`` map kept in history and seen by alert rules."""
        disks, nics = self.disks.values(), self.nics.values()
        available = self.guest_memory.get("available_bytes")
        return {
            "cpu_pct": self.cpu_pct,
            "cpu_of_allocation_pct": (
                self.cpu_pct / self.vcpus if self.cpu_pct is not None else None
            ),
            "cgroup_cpu_pct": self.cgroup_cpu_pct,
            "cpu_throttled_pct": self.cpu_throttled_pct,
            "memory_rss_bytes": _opt(self.memory_rss_bytes),
            "cgroup_memory_bytes": _opt(self.cgroup_memory_bytes),
            "balloon_actual_bytes": _opt(self.balloon_actual_bytes),
            "guest_memory_available_bytes": _opt(available),
            "disk_read_bps": _sum([d.read_bps for d in disks]),
            "disk_write_bps": _sum([d.write_bps for d in disks]),
            "net_rx_bps": _sum([n.rx_bps for n in nics]),
            "net_tx_bps": _sum([n.tx_bps for n in nics]),
        }


def _opt(value: int | None) -> float | None:
    return None if value is None else float(value)


def _sum(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) if known else None


class HostSample(BaseModel):
    """One collection of this host (psutil, /proc/pressure)."""

    time: float
    hostname: str = ""
    cpus: int = 1
    cpu_pct: float | None = None  # of the whole host: 100 = every core busy
    cpu_seconds_total: dict[str, float] = Field(default_factory=dict)  # mode -> s
    load1: float = 0.0
    load5: float = 0.0
    load15: float = 0.0
    memory_total_bytes: int = 0
    memory_available_bytes: int = 0
    memory_available_pct: float = 100.0
    swap_used_bytes: int = 0
    disk_read_bytes_total: int = 0
    disk_write_bytes_total: int = 0
    disk_read_bps: float | None = None
    disk_write_bps: float | None = None
    net_rx_bytes_total: int = 0
    net_tx_bytes_total: int = 0
    net_rx_bps: float | None = None
    net_tx_bps: float | None = None
    pressure: dict[str, float] = Field(default_factory=dict)  # "memory_some_avg10" -> %
    kvm_usable: bool = False
    instances_running: int = 0
    unavailable: dict[str, str] = Field(default_factory=dict)

    def history_values(self) -> dict[str, float | None]:
        used = self.memory_total_bytes - self.memory_available_bytes
        return {
            "cpu_pct": self.cpu_pct,
            "load1": self.load1,
            "memory_used_bytes": float(used),
            "memory_available_pct": self.memory_available_pct,
            "swap_used_bytes": float(self.swap_used_bytes),
            "disk_read_bps": self.disk_read_bps,
            "disk_write_bps": self.disk_write_bps,
            "net_rx_bps": self.net_rx_bps,
            "net_tx_bps": self.net_tx_bps,
            "kvm_usable": 1.0 if self.kvm_usable else 0.0,
            "instances_running": float(self.instances_running),
            **{f"pressure_{k}": v for k, v in self.pressure.items()},
        }


def metric_names(host: bool) -> frozenset[str]:
    """What a threshold rule on the host (else on instances) may watch; the host's
    ``pressure_*`` metrics are the kernel's (PSI) and vary by host."""
    sample = HostSample(time=0) if host else InstanceSample(name="x", time=0)
    return frozenset(sample.history_values())


class Series(BaseModel):
    """History of one target: per metric, ``[time, average, maximum]`` points, oldest first."""

    target: str
    range_s: int
    step_s: int
    tier_step_s: int  # the stored resolution the points were built from
    points: dict[str, list[tuple[float, float, float]]] = Field(default_factory=dict)


class InstanceMetrics(BaseModel):
    latest: InstanceSample | None = None
    history: Series


class HostMetrics(BaseModel):
    latest: HostSample | None = None
    history: Series


# -- alerts ------------------------------------------------------------------------------

Severity = Literal["info", "warning", "critical"]
Op = Literal[">", ">=", "<", "<="]


class AlertRule(BaseModel):
    """A threshold rule (``metric`` ``op`` ``threshold`` held for ``for_s`` seconds) on every
    target matching ``target`` (``host``, ``instance/*`` or ``instance/NAME``), or an event
    rule that fires on an event of kind ``event`` and resolves on ``resolve_event`` (a kind
    whose target is the same) or after ``for_s`` seconds."""

    model_config = ConfigDict(extra="forbid")

    name: NameStr
    kind: Literal["threshold", "event"] = "threshold"
    target: Annotated[str, Field(max_length=80)] = "instance/*"
    metric: Annotated[str, Field(max_length=80)] | None = None
    op: Op = ">"
    threshold: float = 0.0
    for_s: Annotated[float, Field(ge=0, le=30 * 86400)] = 60.0
    event: Annotated[str, Field(max_length=80)] | None = None
    resolve_event: Annotated[str, Field(max_length=80)] | None = None
    severity: Severity = "warning"
    enabled: bool = True
    summary: Annotated[str, Field(max_length=200)] = ""
    builtin: bool = False


class Alert(BaseModel):
    """One rule's state on one target."""

    rule: str
    target: str
    state: Literal["pending", "firing", "resolved"]
    severity: Severity = "warning"
    since: float  # when the condition began (pending) or the alert fired
    resolved_at: float | None = None
    value: float | None = None
    message: str = ""
    silenced_until: float | None = None


class Silence(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rule: NameStr
    target: Annotated[str, Field(max_length=80)] = "*"
    duration_s: Annotated[float, Field(gt=0, le=30 * 86400)] = 3600.0
    until: float | None = None  # set by the server
    comment: Annotated[str, Field(max_length=200)] = ""


# -- utilization and consolidation -------------------------------------------------------


class InstanceUsage(BaseModel):
    name: str
    vcpus: int
    memory_mib: int
    cpu_avg_pct: float  # of one core, averaged over the window
    cpu_peak_pct: float
    cpu_of_allocation_pct: float  # cpu_avg_pct / vcpus
    memory_used_avg_mib: float  # QEMU RSS (host view: what the VM costs)
    memory_used_peak_mib: float
    samples: int
    findings: list[str] = Field(default_factory=list)  # idle / oversized / bottleneck hints


class UtilizationReport(BaseModel):
    window_s: int
    host_cpus: int
    host_memory_mib: int
    allocated_vcpus: int
    allocated_memory_mib: int
    used_cpu_avg_cores: float
    used_memory_avg_mib: float
    host_cpu_avg_pct: float | None
    host_memory_used_avg_pct: float | None
    cpu_consolidation_ratio: float  # allocated vCPUs per host core
    memory_consolidation_ratio: float  # allocated guest memory per host memory
    cpu_utilization_of_allocation_pct: float
    instances: list[InstanceUsage] = Field(default_factory=list)
    hints: list[str] = Field(default_factory=list)
