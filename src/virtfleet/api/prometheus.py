"""The Prometheus exposition of the latest samples and firing alerts (``GET /metrics``).

Owns the metric names and labels, following Prometheus conventions: a
``virtfleet_`` prefix, base units in the name (``_bytes``, ``_seconds``), ``_total``
on counters (prometheus-client appends it), instances labelled ``name`` (not
``instance``, which Prometheus sets to the scrape target). Built per scrape from
the collector's latest round, so a scrape never samples the host itself.
Must not hold state of its own.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from virtfleet.model.metrics import Alert, HostSample, InstanceSample

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _gauge(name: str, doc: str, labels: list[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"virtfleet_{name}", doc, labels=labels)


def _counter(name: str, doc: str, labels: list[str]) -> CounterMetricFamily:
    return CounterMetricFamily(f"virtfleet_{name}", doc, labels=labels)


class PlatformCollector(Collector):
    """A prometheus-client collector over one round of samples."""

    def __init__(
        self,
        host: HostSample | None,
        instances: list[InstanceSample],
        alerts: list[Alert],
        rounds: int,
    ) -> None:
        self.host = host
        self.instances = instances
        self.alerts = alerts
        self.rounds = rounds

    def collect(self) -> Iterator[Metric]:
        yield from _instance_families(self.instances)
        if self.host is not None:
            yield from _host_families(self.host)
        firing = _gauge("alert_firing", "1 for each firing alert", ["rule", "target", "severity"])
        for alert in self.alerts:
            firing.add_metric([alert.rule, alert.target, alert.severity], 1.0)
        yield firing
        rounds = _counter("metrics_collections", "Collection rounds since the daemon started", [])
        rounds.add_metric([], float(self.rounds))
        yield rounds


def _instance_families(samples: list[InstanceSample]) -> Iterator[Metric]:
    n = ["name"]
    info = _gauge(
        "instance_info", "Running instances (value 1)", ["name", "kind", "accel", "power"]
    )
    vcpus = _gauge("instance_vcpus", "vCPUs allocated", n)
    mem = _gauge("instance_memory_allocated_bytes", "Guest memory allocated", n)
    cpu = _counter("instance_cpu_seconds", "CPU time of the instance's process", n)
    vcpu = _counter("instance_vcpu_seconds", "CPU time of each vCPU thread", ["name", "vcpu"])
    cg_cpu = _counter("instance_cgroup_cpu_seconds", "CPU time charged to the cgroup", n)
    cap = _gauge("instance_cpu_limit_cores", "CPU cap of the cgroup, in cores", n)
    rss = _gauge("instance_memory_rss_bytes", "Resident memory of the process", n)
    cg_mem = _gauge("instance_cgroup_memory_bytes", "Memory charged to the cgroup", n)
    balloon = _gauge("instance_balloon_actual_bytes", "Guest memory after ballooning", n)
    guest = _gauge("instance_guest_memory_bytes", "Guest memory statistics", ["name", "stat"])
    disk = {
        key: _counter(f"instance_disk_{key}", f"Disk {key.replace('_', ' ')}", ["name", "device"])
        for key in ("read_bytes", "written_bytes", "reads_completed", "writes_completed")
    }
    net = {
        key: _counter(
            f"instance_network_{key}", f"Network {key.replace('_', ' ')}", ["name", "nic"]
        )
        for key in ("receive_bytes", "transmit_bytes", "receive_packets", "transmit_packets")
    }
    for s in samples:
        info.add_metric([s.name, s.kind, s.accel, s.power], 1.0)
        vcpus.add_metric([s.name], s.vcpus)
        mem.add_metric([s.name], s.memory_mib * 1024 * 1024)
        _add(cpu, [s.name], s.cpu_seconds_total)
        for index, secs in sorted(s.vcpu_seconds_total.items()):
            vcpu.add_metric([s.name, index], secs)
        _add(cg_cpu, [s.name], s.cgroup_cpu_seconds_total)
        _add(cap, [s.name], s.cpu_cap_pct / 100 if s.cpu_cap_pct is not None else None)
        _add(rss, [s.name], s.memory_rss_bytes)
        _add(cg_mem, [s.name], s.cgroup_memory_bytes)
        _add(balloon, [s.name], s.balloon_actual_bytes)
        for stat, value in sorted(s.guest_memory.items()):
            if stat.endswith("_bytes"):
                guest.add_metric([s.name, stat.removesuffix("_bytes")], value)
        for device, d in sorted(s.disks.items()):
            disk["read_bytes"].add_metric([s.name, device], d.read_bytes_total)
            disk["written_bytes"].add_metric([s.name, device], d.write_bytes_total)
            disk["reads_completed"].add_metric([s.name, device], d.read_ops_total)
            disk["writes_completed"].add_metric([s.name, device], d.write_ops_total)
        for nic, io in sorted(s.nics.items()):
            net["receive_bytes"].add_metric([s.name, nic], io.rx_bytes_total)
            net["transmit_bytes"].add_metric([s.name, nic], io.tx_bytes_total)
            net["receive_packets"].add_metric([s.name, nic], io.rx_packets_total)
            net["transmit_packets"].add_metric([s.name, nic], io.tx_packets_total)
    yield from (info, vcpus, mem, cpu, vcpu, cg_cpu, cap, rss, cg_mem, balloon, guest)
    yield from disk.values()
    yield from net.values()


def _add(
    family: GaugeMetricFamily | CounterMetricFamily, labels: list[str], value: float | None
) -> None:
    if value is not None:
        family.add_metric(labels, float(value))


def _host_families(h: HostSample) -> Iterator[Metric]:
    cpu = _counter("host_cpu_seconds", "Host CPU time by mode (all cores)", ["mode"])
    for mode, secs in sorted(h.cpu_seconds_total.items()):
        cpu.add_metric([mode], secs)
    yield cpu
    gauges = {
        "host_cpus": ("Logical CPUs", h.cpus),
        "host_load1": ("1-minute load average", h.load1),
        "host_load5": ("5-minute load average", h.load5),
        "host_load15": ("15-minute load average", h.load15),
        "host_memory_total_bytes": ("Host memory", h.memory_total_bytes),
        "host_memory_available_bytes": ("Host memory available", h.memory_available_bytes),
        "host_swap_used_bytes": ("Swap in use", h.swap_used_bytes),
        "host_kvm_usable": ("1 if a KVM vCPU really runs here, 0 under TCG", int(h.kvm_usable)),
        "host_instances_running": ("Instances running", h.instances_running),
    }
    for name, (doc, value) in gauges.items():
        family = _gauge(name, doc, [])
        family.add_metric([], float(value))
        yield family
    counters = {
        "host_disk_read_bytes": ("Bytes read from host disks", h.disk_read_bytes_total),
        "host_disk_written_bytes": ("Bytes written to host disks", h.disk_write_bytes_total),
        "host_network_receive_bytes": ("Bytes received (not lo)", h.net_rx_bytes_total),
        "host_network_transmit_bytes": ("Bytes sent (not lo)", h.net_tx_bytes_total),
    }
    for name, (doc, total) in counters.items():
        counter = _counter(name, doc, [])
        counter.add_metric([], float(total))
        yield counter
    psi = _gauge(
        "host_pressure_avg10_ratio", "PSI: share of the last 10 s stalled", ["resource", "kind"]
    )
    for key, pct in sorted(h.pressure.items()):
        resource, kind, _ = key.split("_", 2)
        psi.add_metric([resource, kind], pct / 100)
    yield psi


def exposition(
    host: HostSample | None, instances: list[InstanceSample], alerts: list[Alert], rounds: int
) -> bytes:
    """The text exposition format of one scrape."""
    from prometheus_client import generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(PlatformCollector(host, instances, alerts, rounds))
    return generate_latest(registry)
