"""The agent's NIC plumbing for containers (host/nics.py) over the fake network host: a
container gets no taps but a join step that gives its init's netns one veth per network
NIC (eth0, eth1... with the NIC's MAC); unplug removes them; an unknown network is refused
before anything is made."""

from __future__ import annotations

import pytest

from virtfleet.errors import InvalidInputError, NetworkNotOnHostError
from virtfleet.host.nics import NicPlumber
from virtfleet.model.instance import InstanceSpec
from virtfleet.model.network import NetworkSpec
from virtfleet.network.fake import FakeNetworkManager
from virtfleet.network.links import tap_name
from virtfleet.state.memory import MemoryStore
from virtfleet.state.networks import NetworkRepo

MACS = ("52:54:00:00:00:01", "52:54:00:00:00:02")


class Recorder(FakeNetworkManager):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, int, str, int, str, str | None]] = []

    async def attach_netns(
        self,
        instance: str,
        nic: int,
        network: NetworkSpec,
        netns_pid: int,
        ifname: str = "eth0",
        mac: str | None = None,
    ) -> str:
        self.calls.append((instance, nic, network.name, netns_pid, ifname, mac))
        return await super().attach_netns(instance, nic, network, netns_pid, ifname, mac)


def _container(*networks: str) -> InstanceSpec:
    nics = [
        {"mode": "network", "network": n, "mac": mac}
        for n, mac in zip(networks, MACS, strict=False)
    ]
    return InstanceSpec.model_validate(
        {"name": "ct", "kind": "container", "image": "ctiny", "nics": nics}
    )


async def _plumber() -> tuple[NicPlumber, Recorder]:
    store, host = MemoryStore(), Recorder()
    for name, subnet in (("lan", "10.1.0.0/24"), ("iso", "10.2.0.0/24")):
        await NetworkRepo(store).create(NetworkSpec(name=name, subnet=subnet).with_defaults())
    return NicPlumber(store, host), host


async def test_container_nics_become_veths_in_the_init_netns() -> None:
    """No taps for a container; the join step attaches eth0 and eth1 with their MACs."""
    plumber, host = await _plumber()
    spec = _container("lan", "iso")
    assert await plumber.plug(spec) == {}
    join = await plumber.joiner(spec)
    assert join is not None and host.taps == {}
    await join(4242)
    assert host.calls == [
        ("ct", 0, "lan", 4242, "eth0", MACS[0]),
        ("ct", 1, "iso", 4242, "eth1", MACS[1]),
    ]
    assert set(host.taps) == {tap_name("ct", 0), tap_name("ct", 1)}
    await plumber.unplug("ct")
    assert host.taps == {}


async def test_no_join_step_without_network_nics_or_for_vms() -> None:
    plumber, _ = await _plumber()
    assert await plumber.joiner(_container()) is None
    vm = InstanceSpec(name="v", image="tiny", nics=[{"mode": "network", "network": "lan"}])
    assert await plumber.joiner(vm) is None


async def test_unknown_network_is_refused_before_anything_is_made() -> None:
    plumber, host = await _plumber()
    with pytest.raises(InvalidInputError, match="no network 'nope'"):
        await plumber.joiner(_container("lan", "nope"))
    assert host.calls == [] and host.taps == {}


async def test_another_hosts_network_is_refused_before_anything_is_made() -> None:
    """A nat network owned by another host never gets a tap or veth here (its bridge is
    there); one this host owns does."""
    store, host = MemoryStore(), Recorder()
    for name, owner in (("theirs", "host-a"), ("ours", "host-b")):
        spec = NetworkSpec(name=name, subnet="10.3.0.0/24", host=owner)
        await NetworkRepo(store).create(spec.with_defaults())
    plumber = NicPlumber(store, host, "host-b")
    vm = InstanceSpec(name="v", image="tiny", nics=[{"mode": "network", "network": "theirs"}])
    with pytest.raises(NetworkNotOnHostError, match="network theirs exists on another host"):
        await plumber.plug(vm)
    with pytest.raises(NetworkNotOnHostError):
        await plumber.joiner(_container("theirs"))
    assert host.calls == [] and host.taps == {}
    ours = vm.model_copy(update={"nics": [vm.nics[0].model_copy(update={"network": "ours"})]})
    assert await plumber.plug(ours) == {0: tap_name("v", 0)}


class Counting(Recorder):
    def __init__(self) -> None:
        super().__init__()
        self.searches: list[str] = []

    async def remove_taps(self, instance: str) -> None:
        self.searches.append(instance)
        await super().remove_taps(instance)


async def test_unplug_searches_the_host_only_for_instances_that_may_have_links() -> None:
    """An instance started here without network NICs has nothing to unplug (no host-wide
    link search at its stop); one with NICs, or one this agent did not start, is searched."""
    plumber, _ = await _plumber()
    host = plumber.host = Counting()
    bare, wired = _container(), _container("lan").model_copy(update={"name": "wired"})
    assert await plumber.joiner(bare) is None
    join = await plumber.joiner(wired)
    assert join is not None
    await join(4242)
    for name in ("ct", "wired", "adopted"):
        await plumber.unplug(name)
    assert host.searches == ["wired", "adopted"] and host.taps == {}
    await plumber.unplug("ct")  # a second stop: no longer known as bare, searched again
    assert host.searches[-1] == "ct"
