"""The capacity tally under a store whose watch lags (as etcd's does over the network):
an admission still counts the reservation the one before it wrote, and the tally
follows deletes and re-creations. Growing running containers' limits is admitted too."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from virtfleet.errors import CapacityError, ConflictError
from virtfleet.model.capacity import OvercommitRatios
from virtfleet.model.host import HostFacts, KvmProbe
from virtfleet.model.instance import DesiredPower, DesiredState, InstanceSpec, NicSpec, PowerState
from virtfleet.service.capacity import CapacityService
from virtfleet.service.containers import ContainerService, NoContainers
from virtfleet.state.memory import MemoryStore
from virtfleet.state.repos import EventLog, InstanceRepo
from virtfleet.state.store import WatchEvent

FACTS = HostFacts(
    hostname="h",
    cpus=4,
    memory_mib=4096,
    qemu_version="9.2.0",
    kvm=KvmProbe(device_present=False, usable=False, reason="none"),
)


class LaggingStore(MemoryStore):
    """Watch events arrive some turns of the event loop after their commit."""

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


async def test_admissions_wait_for_the_reservation_before_them() -> None:
    """Two starts of 4 GiB VMs on a 4 GiB host at once: the second is refused."""
    store = LaggingStore()
    repo = InstanceRepo(store)
    for name in ("a", "b"):
        await repo.create(InstanceSpec(name=name, image="tiny", memory_mib=4096), DesiredState())
    capacity = CapacityService(store, FACTS, OvercommitRatios(memory=1.0))
    await capacity.start()

    async def start(name: str) -> None:
        async with capacity.reserving(name, 4096, 1):
            rec = await repo.get(name)
            running = DesiredState(power=DesiredPower.RUNNING, generation=2)
            await repo.put_desired(name, running, rec.desired_revision)

    results = await asyncio.gather(start("a"), start("b"), return_exceptions=True)
    refused = [r for r in results if isinstance(r, CapacityError)]
    assert len(refused) == 1 and results.count(None) == 1, results
    assert "needs 4096 MiB, 0 MiB available" in refused[0].message
    await capacity.close()


async def test_the_tally_follows_deletes_and_recreations() -> None:
    """A deleted instance holds nothing; one re-created under its name holds its new size."""
    store = MemoryStore()
    repo = InstanceRepo(store)
    capacity = CapacityService(store, FACTS)
    await capacity.start()
    running = DesiredState(power=DesiredPower.RUNNING, generation=1)
    await repo.create(InstanceSpec(name="a", image="tiny", memory_mib=1024), running)
    await capacity.tally.reached(await store.revision())
    assert (capacity.tally.memory_mib, capacity.tally.instances) == (1024, 1)
    await repo.remove("a")
    await repo.create(InstanceSpec(name="a", image="tiny", memory_mib=2048, vcpus=2), running)
    await capacity.tally.reached(await store.revision())
    assert (capacity.tally.memory_mib, capacity.tally.vcpus) == (2048, 2)
    await repo.remove("a")
    await capacity.tally.reached(await store.revision())
    assert (capacity.tally.memory_mib, capacity.tally.instances) == (0, 0)
    await capacity.close()
    assert not capacity.tally.following


class SlowLimits(NoContainers):
    """A runtime whose limit update takes some turns of the event loop (as runc's does)."""

    async def update_limits(self, name: str, spec: InstanceSpec) -> None:
        for _ in range(5):
            await asyncio.sleep(0)


async def test_parallel_container_limit_growth_admits_one() -> None:
    """Two running containers grown at once where one growth fits: one grows."""
    store = MemoryStore()
    repo = InstanceRepo(store)
    running = DesiredState(power=DesiredPower.RUNNING, generation=1)
    for name in ("a", "b"):
        spec = InstanceSpec(name=name, kind="container", image="ctiny", memory_mib=1024)
        await repo.create(spec, running)
        status = (await repo.get(name)).status
        await repo.put_status(name, status.model_copy(update={"power": PowerState.RUNNING}))
    service = ContainerService(store, SlowLimits(), FACTS, EventLog(store))
    service.capacity = CapacityService(store, FACTS, OvercommitRatios(memory=1.0))
    await service.capacity.start()
    grow = {"memory_mib": 3072}
    results = await asyncio.gather(
        service.set_limits("a", grow), service.set_limits("b", grow), return_exceptions=True
    )
    refused = [r for r in results if isinstance(r, CapacityError)]
    assert len(refused) == 1, results
    assert "needs 3072 MiB, 1024 MiB available" in refused[0].message
    sizes = sorted([(await repo.get(n)).spec.memory_mib for n in ("a", "b")])
    assert sizes == [1024, 3072]
    await service.capacity.close()


class CutOffStore(MemoryStore):
    """The first watch is cut off (as a consumer that fell behind is) after one event."""

    cut = False

    def watch(  # type: ignore[override]
        self, prefix: str, after_revision: int | None = None
    ) -> AsyncIterator[WatchEvent]:
        inner = super().watch(prefix, after_revision)
        if self.cut:
            return inner
        self.cut = True

        async def cut_off() -> AsyncIterator[WatchEvent]:
            async for event in inner:
                yield event
                raise ConflictError(f"watcher fell behind; re-watch after {event.revision}")

        return cut_off()


async def test_a_cut_off_tally_counts_again() -> None:
    """When its watch is cut off the tally re-reads every instance and follows on."""
    store = CutOffStore()
    repo = InstanceRepo(store)
    capacity = CapacityService(store, FACTS)
    await capacity.start()
    running = DesiredState(power=DesiredPower.RUNNING, generation=1)
    await repo.create(InstanceSpec(name="a", image="tiny", memory_mib=1024), running)
    await repo.create(InstanceSpec(name="b", image="tiny", memory_mib=512), running)
    await capacity.tally.reached(await store.revision())
    assert capacity.tally.following and store.cut
    assert (capacity.tally.memory_mib, capacity.tally.instances) == (1536, 2)
    await repo.remove("a")
    await capacity.tally.reached(await store.revision())
    assert (capacity.tally.memory_mib, capacity.tally.instances) == (512, 1)
    await capacity.close()


async def test_the_tally_knows_every_nics_mac() -> None:
    """MACs come and go with the specs that hold them (a changed spec, a deleted instance)."""
    store = MemoryStore()
    repo = InstanceRepo(store)
    capacity = CapacityService(store, FACTS)
    await capacity.start()

    def spec(name: str, *macs: str) -> InstanceSpec:
        nics = [NicSpec(mac=m) for m in macs]
        return InstanceSpec(name=name, image="tiny", nics=nics)

    await repo.create(spec("a", "52:54:00:00:00:01", "52:54:00:00:00:02"), DesiredState())
    await repo.create(spec("b", "52:54:00:00:00:03"), DesiredState())
    await capacity.tally.reached(await store.revision())
    assert capacity.tally.macs() == {f"52:54:00:00:00:0{i}" for i in (1, 2, 3)}
    await repo.put_spec(spec("a", "52:54:00:00:00:04"))
    await repo.remove("b")
    await capacity.tally.reached(await store.revision())
    assert capacity.tally.macs() == {"52:54:00:00:00:04"}
    assert [r.name for r in capacity.tally.records()] == ["a"]
    await capacity.close()
