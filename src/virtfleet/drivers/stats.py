"""The optional ``SupportsStats`` driver capability: what only the driver can measure.

A driver that knows more about its instances than the host's process table (QEMU
through QMP: block devices, the balloon, the guest's own memory statistics, which
NIC is which tap) offers ``stats(name)``. The agent's collector adds what any
process or cgroup shows (CPU, RSS, cgroup counters). Must not read the store.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from virtfleet.model.metrics import DiskIO


@dataclass
class DriverStats:
    """Counters of one running instance; ``unavailable`` says what is missing and why."""

    disks: dict[str, DiskIO] = field(default_factory=dict)
    taps: dict[str, str] = field(default_factory=dict)  # NIC id -> host tap interface
    balloon_actual_bytes: int | None = None
    guest_memory: dict[str, int] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)


@runtime_checkable
class SupportsStats(Protocol):
    async def stats(self, name: str) -> DriverStats:
        """Counters of a running or paused instance; ``InvalidStateError`` otherwise."""
        ...
