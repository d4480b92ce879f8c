"""What this host really uses now (memory, CPU load), for capacity reports. Reads /proc only."""

from __future__ import annotations

import os

import psutil

from virtfleet.model.capacity import HostUsage


def sample_usage() -> HostUsage:
    """Memory in use (total minus available) and the 1-minute load as % of all CPUs."""
    mem = psutil.virtual_memory()
    cpus = os.cpu_count() or 1
    load = os.getloadavg()[0] / cpus * 100.0
    return HostUsage(
        memory_used_mib=(mem.total - mem.available) // 2**20, cpu_load_pct=round(load, 1)
    )
