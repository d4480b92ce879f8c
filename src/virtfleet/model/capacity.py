"""Host capacity: totals, what instances are promised (allocated), what is used. Pure data."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field

Ratio = Annotated[float, Field(gt=0, le=100)]


class OvercommitRatios(BaseModel):
    """How far allocations may exceed the host: 4 vCPUs per core, memory not at all (1.0)."""

    cpu: Ratio = 4.0
    memory: Ratio = 1.0


class HostUsage(BaseModel):
    """What the host really uses right now (sampled by the host layer)."""

    memory_used_mib: int = 0
    cpu_load_pct: float = 0.0  # 1-minute load average as a percentage of all CPUs


class Capacity(BaseModel):
    """One host's capacity. Allocated = the spec of every instance that runs or should run."""

    cpus: int
    memory_mib: int
    ratios: OvercommitRatios
    vcpus_limit: int  # cpus x cpu ratio
    memory_limit_mib: int  # memory x memory ratio
    allocated_vcpus: int
    allocated_memory_mib: int
    available_vcpus: int
    available_memory_mib: int
    instances: int  # how many instances the allocation counts
    used: HostUsage | None = None
