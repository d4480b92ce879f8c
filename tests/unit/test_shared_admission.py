"""Admission is a reservation across daemons: two capacity services (two daemons of one
host) on one store admit exactly as many creates as fit, however the 50 interleave."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from virtfleet.errors import CapacityError
from virtfleet.model.capacity import OvercommitRatios
from virtfleet.model.instance import DesiredPower, DesiredState, InstanceSpec
from virtfleet.service.allocations import counts
from virtfleet.service.capacity import CapacityService
from virtfleet.state.repos import InstanceRepo
from virtfleet.state.sqlite import SQLiteStore
from virtfleet.state.store import StateStore, WatchEvent

from ..yielding import yielding
from .test_capacity_tally import FACTS, LaggingStore  # a 4 CPU, 4096 MiB host


class LaggingSQLite(SQLiteStore):
    """Watch events arrive some turns of the loop after their commit (as over a network):
    each daemon's tally may lag behind the other daemon's admissions."""

    def watch(  # type: ignore[override]
        self, prefix: str, after_revision: int | None = None
    ) -> AsyncIterator[WatchEvent]:
        inner = super().watch(prefix, after_revision)

        async def lagging() -> AsyncIterator[WatchEvent]:
            async for event in inner:
                for _ in range(20):
                    await asyncio.sleep(0)
                yield event

        return lagging()


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_fifty_creates_at_the_edge_from_two_daemons(kind: str, tmp_path: Path) -> None:
    """50 concurrent 512 MiB create+start requests, split over two daemons whose store
    watches lag, on a host with room for 8: exactly 8 are admitted, the others refused
    naming the shortfall."""
    made: StateStore = LaggingStore() if kind == "memory" else LaggingSQLite(tmp_path / "s")
    store = yielding(made)
    daemons = [CapacityService(store, FACTS, OvercommitRatios(memory=1.0)) for _ in range(2)]
    for daemon in daemons:
        await daemon.start()
    repo = InstanceRepo(store)

    async def create(i: int) -> str:
        name = f"vm{i}"
        async with daemons[i % 2].reserving(name, 512, 1):
            spec = InstanceSpec(name=name, image="tiny", memory_mib=512)
            await repo.create(spec, DesiredState(power=DesiredPower.RUNNING))
        return name

    results = await asyncio.gather(*(create(i) for i in range(50)), return_exceptions=True)
    admitted = [r for r in results if isinstance(r, str)]
    refused = [r for r in results if isinstance(r, CapacityError)]
    assert (len(admitted), len(refused)) == (8, 42), results
    assert all("needs 512 MiB, 0 MiB available" in r.message for r in refused)
    held = [rec for rec in await repo.list() if counts(rec)]
    assert sum(rec.spec.memory_mib for rec in held) == 4096
    for daemon in daemons:
        await daemon.close()
    await made.close()
