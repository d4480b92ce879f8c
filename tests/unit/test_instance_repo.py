"""InstanceRepo reuses what it parsed while a key's revision is unchanged: reads still
see every write, and a caller changing its record never changes what others read. A
shared listing (for read-only callers) reuses the parsed models themselves."""

from __future__ import annotations

from virtfleet.model.instance import DesiredPower, DesiredState, InstanceSpec, PowerState
from virtfleet.state.memory import MemoryStore
from virtfleet.state.repos import InstanceRepo


async def test_reads_follow_writes_and_records_are_the_callers_own() -> None:
    store = MemoryStore()
    writer, reader = InstanceRepo(store), InstanceRepo(store)
    await writer.create(InstanceSpec(name="a", image="tiny"), DesiredState())
    first = await reader.get("a")
    first.status.power = PowerState.RUNNING  # the caller's copy only
    first.spec.memory_mib = 1
    again = await reader.get("a")
    assert again.status.power is PowerState.STOPPED and again.spec.memory_mib != 1
    await writer.put_desired("a", DesiredState(power=DesiredPower.RUNNING, generation=2))
    await writer.put_status("a", again.status.model_copy(update={"power": PowerState.PAUSED}))
    listed = {r.name: r for r in await reader.list()}
    assert listed["a"].desired.generation == 2 and listed["a"].status.power is PowerState.PAUSED
    await writer.remove("a")
    await writer.create(InstanceSpec(name="a", image="tiny", vcpus=2), DesiredState())
    assert (await reader.get("a")).spec.vcpus == 2  # a new key revision, parsed anew


async def test_shared_listing_reuses_the_parsed_models_until_a_write() -> None:
    store = MemoryStore()
    repo = InstanceRepo(store)
    await repo.create(InstanceSpec(name="a", image="tiny"), DesiredState())
    [one], [two] = await repo.list(shared=True), await repo.list(shared=True)
    assert one.spec is two.spec and one.status is two.status  # no copies
    [copied] = await repo.list()
    assert copied.spec is not one.spec and copied.spec == one.spec
    await repo.put_desired("a", DesiredState(power=DesiredPower.RUNNING, generation=2))
    [three] = await repo.list(shared=True)
    assert three.desired is not one.desired and three.desired.generation == 2
    assert three.spec is one.spec  # its key was not written
