"""Capacity accounting and admission control for this host.

Owns what counts as allocated (the spec of every instance that runs or is asked
to run: vCPUs and its memory target), the limits the overcommit ratios give,
and refusing a create, start or resize beyond them with an error that names
the shortfall. Must not sample the host itself (it gets a ``usage`` callable)
nor write anything. Two admissions racing may both pass: the check is advisory
per request, not a reservation.
"""

from __future__ import annotations

from collections.abc import Callable

from virtfleet.errors import CapacityError
from virtfleet.model.capacity import Capacity, HostUsage, OvercommitRatios
from virtfleet.model.host import HostFacts
from virtfleet.model.instance import DesiredPower, PowerState
from virtfleet.state.repos import InstanceRecord, InstanceRepo
from virtfleet.state.store import StateStore

_LIVE = (PowerState.STARTING, PowerState.RUNNING, PowerState.PAUSED, PowerState.STOPPING)
_WANTED = (DesiredPower.RUNNING, DesiredPower.PAUSED)


def counts(rec: InstanceRecord) -> bool:
    """An instance holds capacity while it runs or is asked to run."""
    return rec.status.power in _LIVE or rec.desired.power in _WANTED


class CapacityService:
    def __init__(
        self,
        store: StateStore,
        facts: HostFacts,
        ratios: OvercommitRatios | None = None,
        usage: Callable[[], HostUsage] | None = None,
    ) -> None:
        self._repo = InstanceRepo(store)
        self._facts = facts
        self.ratios = ratios or OvercommitRatios()
        self._usage = usage

    async def report(self, exclude: str | None = None, sample: bool = True) -> Capacity:
        """Totals, limits, allocation (without ``exclude``) and, if ``sample`` and a
        ``usage`` callable were given, real usage."""
        held = [r for r in await self._repo.list(shared=True) if counts(r) and r.name != exclude]
        vcpus = sum(r.spec.vcpus for r in held)
        memory = sum(r.spec.memory_mib for r in held)
        vcpus_limit = int(self._facts.cpus * self.ratios.cpu)
        memory_limit = int(self._facts.memory_mib * self.ratios.memory)
        return Capacity(
            cpus=self._facts.cpus,
            memory_mib=self._facts.memory_mib,
            ratios=self.ratios,
            vcpus_limit=vcpus_limit,
            memory_limit_mib=memory_limit,
            allocated_vcpus=vcpus,
            allocated_memory_mib=memory,
            available_vcpus=max(0, vcpus_limit - vcpus),
            available_memory_mib=max(0, memory_limit - memory),
            instances=len(held),
            used=self._usage() if self._usage is not None and sample else None,
        )

    async def admit(self, name: str, memory_mib: int, vcpus: int) -> None:
        """Raise ``CapacityError`` naming the shortfall unless ``name`` fits with this size
        next to everything else allocated (its own current allocation does not count)."""
        if not self._facts.memory_mib:
            return  # memory unknown (facts not probed): nothing honest to compare with
        cap = await self.report(exclude=name, sample=False)  # admission ignores real usage
        short = []
        if memory_mib > cap.available_memory_mib:
            short.append(
                f"needs {memory_mib} MiB, {cap.available_memory_mib} MiB available at ratio "
                f"{cap.ratios.memory:g} ({cap.memory_mib} MiB x {cap.ratios.memory:g}, "
                f"{cap.allocated_memory_mib} MiB allocated)"
            )
        if vcpus > cap.available_vcpus:
            short.append(
                f"needs {vcpus} vCPUs, {cap.available_vcpus} available at ratio "
                f"{cap.ratios.cpu:g} ({cap.cpus} CPUs x {cap.ratios.cpu:g}, "
                f"{cap.allocated_vcpus} allocated)"
            )
        if short:
            raise CapacityError(f"instance {name!r} does not fit on this host: " + "; ".join(short))
