"""``SupportsLiveResources`` for ``QemuDriver``: resource changes of running VMs over QMP.

Owns mapping each capability call to the QMP wrappers in ``live.py`` for one
VM: finding its monitor, its hot-plug ports (from the launched argv) and
refusing changes the machine cannot take (a paused VM cannot answer a
hot-unplug). Must not decide policy or touch the store.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from virtfleet.drivers.qemu import live
from virtfleet.drivers.qemu.config import QemuOptions
from virtfleet.drivers.qemu.qmp import QMPSession
from virtfleet.errors import InvalidStateError, QMPError
from virtfleet.model.instance import DiskLimits, DiskSpec, NicSpec

_PORT = re.compile(r"^pcie-root-port,id=(rp\d+),")


def hotplug_ports(argv: list[str]) -> list[str]:
    """The ids of the pcie-root-ports a VM was launched with, in order."""
    return [m[1] for arg in argv if (m := _PORT.match(arg))]


class LiveResources:
    """Mixed into ``QemuDriver``, which provides ``_monitor`` and ``opts``."""

    opts: QemuOptions

    def _monitor(self, name: str, *, running: bool = True) -> tuple[QMPSession, list[str]]:
        """The VM's QMP session and hot-plug ports; ``InvalidStateError`` unless it runs
        (or, with ``running=False``, is at least paused)."""
        raise NotImplementedError

    async def set_memory(self, name: str, target_mib: int) -> None:
        qmp, _ = self._monitor(name)
        await live.set_balloon(qmp, target_mib)

    def _vcpu_budget(self, name: str) -> int | None:
        """How many more vCPUs this process may create (None: unlimited, i.e. KVM)."""
        raise NotImplementedError

    def _vcpus_created(self, name: str, count: int) -> None:
        raise NotImplementedError

    async def set_vcpus(self, name: str, count: int) -> None:
        qmp, _ = self._monitor(name)
        added = await live.set_vcpus(qmp, count, self._vcpu_budget(name))
        self._vcpus_created(name, added)

    async def add_disk(self, name: str, disk: DiskSpec, path: Path) -> None:
        qmp, ports = self._monitor(name)
        port = await live.free_port(qmp, ports)
        await live.add_disk(qmp, disk.name, path, port, self.opts.aio)

    async def remove_disk(self, name: str, disk: str) -> None:
        qmp, _ = self._monitor(name)
        await live.remove_disk(qmp, disk)

    async def grow_disk(self, name: str, disk: str, size_bytes: int) -> None:
        qmp, _ = self._monitor(name, running=False)
        await live.grow_disk(qmp, disk, size_bytes)

    async def set_disk_limits(self, name: str, disk: str, limits: DiskLimits | None) -> None:
        qmp, _ = self._monitor(name, running=False)
        await live.set_disk_limits(qmp, disk, limits)

    async def add_nic(self, name: str, nic_name: str, nic: NicSpec) -> None:
        qmp, ports = self._monitor(name)
        await live.add_nic(qmp, nic_name, nic, await live.free_port(qmp, ports))

    async def remove_nic(self, name: str, nic_name: str) -> None:
        qmp, _ = self._monitor(name)
        await live.remove_nic(qmp, nic_name)

    async def live_stats(self, name: str) -> dict[str, Any]:
        qmp, _ = self._monitor(name, running=False)
        stats: dict[str, Any] = {}
        try:
            stats.update(await live.balloon_stats(qmp))
        except QMPError:  # no balloon (the emulated device model)
            stats["balloon_actual_mib"] = None
        cpus = await live.hotpluggable_cpus(qmp)
        stats["vcpus_present"] = sum(1 for c in cpus if "qom-path" in c)
        stats["vcpus_max"] = len(cpus)
        return stats


def smp_of(argv: list[str]) -> tuple[int, int]:
    """(boot vCPUs, maxcpus) from the launched ``-smp cpus=N,maxcpus=M``."""
    opts = dict(kv.split("=", 1) for kv in argv[argv.index("-smp") + 1].split(","))
    return int(opts["cpus"]), int(opts.get("maxcpus", opts["cpus"]))


def require(power: str, running: bool) -> None:
    allowed = ["running"] if running else ["running", "paused"]
    if power not in allowed:
        raise InvalidStateError(power, allowed)
