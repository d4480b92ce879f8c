"""Capacity accounting and admission control for this host.

Owns what counts as allocated (the spec of every instance that runs, or whose
start is asked for and has not failed: vCPUs and its memory target), the limits
the overcommit ratios give, and refusing a create, start or resize beyond them
with an error that names the shortfall.

Admission is a reservation: ``reserving`` checks and holds the one admission
lock while the caller writes what makes the allocation (a desired ``running``
or a bigger spec), so two admissions never both pass on the same room. The
written request is the reservation: it counts while the start is in flight,
stops counting when the agent records the start as failed, and is the running
instance's allocation once it runs. Must not sample the host itself (it gets a
``usage`` callable) nor write anything itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from virtfleet.errors import CapacityError
from virtfleet.model.capacity import Capacity, HostUsage, OvercommitRatios
from virtfleet.model.host import HostFacts
from virtfleet.model.instance import DesiredPower, PowerState
from virtfleet.state.repos import InstanceRecord, InstanceRepo
from virtfleet.state.store import StateStore

_LIVE = (PowerState.STARTING, PowerState.RUNNING, PowerState.PAUSED, PowerState.STOPPING)
_WANTED = (DesiredPower.RUNNING, DesiredPower.PAUSED)


def counts(rec: InstanceRecord) -> bool:
    """An instance holds capacity while it runs or is asked to run, unless the agent
    carried that request out and recorded an error (its start failed: nothing runs)."""
    if rec.status.power in _LIVE:
        return True
    if rec.desired.power not in _WANTED:
        return False
    failed = rec.status.observed_generation >= rec.desired.generation and rec.status.error_code
    return not failed


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
        self._lock = asyncio.Lock()  # one admission at a time: check and write together

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

    @asynccontextmanager
    async def reserving(self, name: str, memory_mib: int, vcpus: int) -> AsyncIterator[None]:
        """Admit ``name`` at this size and hold the admission lock for the block, which
        must write the request that makes the allocation (it counts from then on).
        ``CapacityError`` (nothing is run) if it does not fit."""
        async with self._lock:
            await self.admit(name, memory_mib, vcpus)
            yield

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
