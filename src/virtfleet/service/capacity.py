"""Capacity accounting and admission control for this host.

Owns the limits the overcommit ratios give and refusing a create, start or
resize beyond them with an error that names the shortfall. What counts as
allocated (the spec of every instance that runs, or whose start is asked for
and has not failed) is service/allocations.py's, whose tally, once started,
spares each admission a listing of every instance.

Admission is a reservation: ``reserving`` checks and holds the host's admission
claim (a lease-backed claim in the store, state/locks.py, so daemons sharing the
store take turns too) while the caller writes what makes the allocation (a desired
``running`` or a bigger spec), so two admissions never both pass on the same room. The
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
from virtfleet.service.allocations import Allocations, counts
from virtfleet.state.keys import instance_key
from virtfleet.state.locks import LOCAL_HOST, Claims, Session
from virtfleet.state.repos import InstanceRepo
from virtfleet.state.store import StateStore

__all__ = ["CapacityService", "counts"]


class CapacityService:
    def __init__(
        self,
        store: StateStore,
        facts: HostFacts,
        ratios: OvercommitRatios | None = None,
        usage: Callable[[], HostUsage] | None = None,
        *,
        session: Session | None = None,
        host_id: str = LOCAL_HOST,
    ) -> None:
        self._store = store
        self._session = session or Session(store)
        self._owns_session = session is None
        self._claims = Claims(store, self._session, "admission", host_id)
        self._host = host_id
        self._repo = InstanceRepo(store)
        self.tally = Allocations(store)  # used once started (else every instance is listed)
        self._facts = facts
        self.ratios = ratios or OvercommitRatios()
        self._usage = usage
        self._lock = asyncio.Lock()  # one admission at a time: check and write together

    async def report(self, exclude: str | None = None, sample: bool = True) -> Capacity:
        """Totals, limits, allocation (without ``exclude``) and, if ``sample`` and a
        ``usage`` callable were given, real usage."""
        memory, vcpus, instances = await self._allocated(exclude)
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
            instances=instances,
            used=self._usage() if self._usage is not None and sample else None,
        )

    async def start(self) -> None:
        """Load the allocation tally and keep it current from here on."""
        await self.tally.start()

    async def close(self) -> None:
        await self.tally.close()
        if self._owns_session:
            await self._session.close()

    async def _allocated(self, exclude: str | None) -> tuple[int, int, int]:
        """(memory MiB, vCPUs, instances) held by counting instances other than ``exclude``."""
        t = self.tally
        if t.following:
            mine = t.held(exclude) if exclude else None
            memory, vcpus = mine or (0, 0)
            return t.memory_mib - memory, t.vcpus - vcpus, t.instances - (mine is not None)
        held = [r for r in await self._repo.list(shared=True) if counts(r) and r.name != exclude]
        return sum(r.spec.memory_mib for r in held), sum(r.spec.vcpus for r in held), len(held)

    @asynccontextmanager
    async def reserving(self, name: str, memory_mib: int, vcpus: int) -> AsyncIterator[None]:
        """Admit ``name`` at this size and hold the admission lock for the block, which
        must write the request that makes the allocation (it counts from then on).
        ``CapacityError`` (nothing is run) if it does not fit."""
        async with self._lock, self._claims.held(self._host):
            await self.tally.current()  # another daemon's admissions counted too
            await self.admit(name, memory_mib, vcpus)
            yield
            await self._counted(name)

    async def _counted(self, name: str) -> None:
        """Wait until the tally has taken in what the block wrote for ``name``, so the
        next admission counts it."""
        if not self.tally.following:
            return  # admissions list the store: they see every write
        written = [await self._store.get(instance_key(name, p)) for p in ("spec", "desired")]
        await self.tally.reached(max((kv.mod_revision for kv in written if kv), default=0))

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
