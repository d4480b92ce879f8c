"""The agent's ``NetworkRealiser`` (host/netrealise.py) over the in-memory network back-end
and store: which networks a host makes, what it reports, and how it follows changes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable

from tests.functional.test_ownership import until
from virtfleet.host.netrealise import NetworkRealiser
from virtfleet.model.network import Lease, NetworkHostStatus, NetworkSpec
from virtfleet.network.fake import FakeNetworkManager
from virtfleet.state.keys import NETWORKS, network_host_key
from virtfleet.state.memory import MemoryStore
from virtfleet.state.networks import NetworkRepo
from virtfleet.state.repos import EventLog

UPLINK = NetworkSpec(name="uplink", mode="bridged", parent="br0", vlan=20)


class Counting(FakeNetworkManager):
    def __init__(self) -> None:
        super().__init__()
        self.made: list[str] = []
        self.removed: list[str] = []

    async def create(self, spec: NetworkSpec, others: Iterable[NetworkSpec]) -> None:
        await super().create(spec, others)
        self.made.append(spec.name)

    async def remove(self, spec: NetworkSpec, others: Iterable[NetworkSpec]) -> None:
        await super().remove(spec, others)
        self.removed.append(spec.name)


async def _statuses(repo: NetworkRepo, name: str) -> list[tuple[str, bool, str]]:
    return [(s.host, s.ok, s.reason) for s in await repo.statuses(name)]


async def test_start_reports_what_the_reconcile_left_and_drops_stale_reports() -> None:
    store, host = MemoryStore(), Counting()
    repo = NetworkRepo(store)
    mine = NetworkSpec(name="mine", subnet="10.1.0.0/24", host="h1").with_defaults()
    theirs = NetworkSpec(name="theirs", subnet="10.2.0.0/24", host="h2").with_defaults()
    for spec in (UPLINK, mine, theirs):
        await repo.create(spec)
    await repo.report("theirs", NetworkHostStatus(host="h1", ok=True))  # from an old start
    host.bridges = ()  # this host has no br0
    await host.reconcile([UPLINK, mine], set())  # what the agent's reconcile passes
    realiser = NetworkRealiser(store, host, "h1")
    await realiser.initial()
    assert await _statuses(repo, "mine") == [("h1", True, "")]
    assert await _statuses(repo, "uplink") == [
        ("h1", False, "parent 'br0' is not a bridge on this host")
    ]
    assert await _statuses(repo, "theirs") == []
    assert set(realiser.made) == {"mine"}


async def test_changes_are_followed_and_a_failed_network_is_tried_again() -> None:
    """A new definition is made, a changed one remade, a deleted one removed (and its
    report with it); one that failed is tried again at the next change."""
    store, host = MemoryStore(), Counting()
    repo = NetworkRepo(store)
    host.bridges = ()
    events = EventLog(store)
    realiser = NetworkRealiser(store, host, "h1", events=events)
    task = asyncio.create_task(realiser.follow(await realiser.initial()))
    try:
        await repo.create(UPLINK)
        await until(lambda: _reported(repo, "uplink", False))
        host.bridges = ("br0",)  # the uplink is plugged in
        lan = NetworkSpec(name="lan", subnet="10.1.0.0/24").with_defaults()
        await repo.create(lan)  # any change: the failed one is tried again
        await until(lambda: _reported(repo, "uplink", True))
        await until(lambda: _reported(repo, "lan", True))
        changed = lan.model_copy(update={"allow_host_tcp": [8080]})
        await store.put(NETWORKS + "lan", changed.model_dump_json().encode())
        await until(lambda: _made(realiser, "lan", changed))
        await repo.remove("uplink")
        await until(lambda: _gone(realiser, "uplink"))
        gone = await _statuses(repo, "uplink")
        failures = [(e.kind, e.target, e.data) for e in await events.recent()]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert host.made == ["lan", "uplink", "lan"] and host.removed == ["lan", "uplink"]
    assert gone == [] and "uplink" not in host.networks
    assert host.adopted == ["lan"]  # the rules were last made for what is left
    reason = "parent 'br0' is not a bridge on this host"
    assert failures == [("network.failed", "network/uplink", {"host": "h1", "reason": reason})]


async def _reported(repo: NetworkRepo, name: str, ok: bool) -> bool:
    return [s.ok for s in await repo.statuses(name)] == [ok]


async def _made(realiser: NetworkRealiser, name: str, spec: NetworkSpec) -> bool:
    return realiser.made.get(name) == spec


async def _gone(realiser: NetworkRealiser, name: str) -> bool:
    return name not in realiser.made and name not in realiser.reported


class Polled(FakeNetworkManager):
    def __init__(self) -> None:
        super().__init__()
        self.polls = 0

    def leases(self, network: str) -> list[Lease]:
        self.polls += 1
        return super().leases(network)


async def test_leases_are_reported_when_they_change() -> None:
    """Polled leases are written when they changed, and only then."""
    store, host = MemoryStore(), Polled()
    repo = NetworkRepo(store)
    lan = NetworkSpec(name="lan", subnet="10.1.0.0/24", host="h1").with_defaults()
    await repo.create(lan)
    realiser = NetworkRealiser(store, host, "h1", lease_interval_s=0.01)
    await realiser.sync()
    task = asyncio.create_task(realiser.report_leases())
    try:
        lease = Lease(mac="52:54:00:00:00:01", ip="10.1.0.130", hostname="web")
        host.leased["lan"] = [lease]

        async def reported() -> bool:
            return [s.leases for s in await repo.statuses("lan")] == [[lease]]

        await until(reported)
        before, polls = await store.get(network_host_key("lan", "h1")), host.polls

        async def polled_thrice() -> bool:
            return host.polls >= polls + 3

        await until(polled_thrice)  # three polls with nothing new
        after = await store.get(network_host_key("lan", "h1"))
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert before is not None and after is not None
    assert after.mod_revision == before.mod_revision  # nothing was written again
