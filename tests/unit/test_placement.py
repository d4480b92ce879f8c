"""``choose_host``: the least-allocated online host that fits the request, else this host."""

from __future__ import annotations

from virtfleet.model.host import HostCapacity, HostRecord, HostState
from virtfleet.model.instance import InstanceSpec
from virtfleet.service.placement import Load, choose_host


def host(name: str, memory: int = 4096, vcpus: int = 8, **kw: object) -> HostRecord:
    capacity = HostCapacity(cpus=4, memory_mib=memory, vcpus_limit=vcpus, memory_limit_mib=memory)
    found = HostRecord(id=f"id-{name}", name=name, capacity=capacity, alive=True)
    return found.model_copy(update=kw)


VM = InstanceSpec(name="new", image="tiny", memory_mib=1024, vcpus=2)
BOX = InstanceSpec(name="box", image="tiny", kind="container", memory_mib=64, vcpus=1)


def test_the_least_allocated_share_wins_not_the_least_memory() -> None:
    hosts = [host("a", memory=2048), host("b", memory=8192)]
    loads = {"id-a": Load(512, 1, 1), "id-b": Load(1024, 1, 1)}  # a 25 %, b 12.5 %
    assert choose_host(VM, hosts, loads, "id-a") == "id-b"


def test_hosts_without_room_offline_or_in_maintenance_are_skipped() -> None:
    hosts = [
        host("full", memory=2048),
        host("down", alive=False),
        host("resting", state=HostState.MAINTENANCE),
        host("busy"),
    ]
    loads = {"id-full": Load(1536, 1, 1), "id-busy": Load(2048, 4, 3)}
    assert choose_host(VM, hosts, loads, "id-here") == "id-busy"
    assert choose_host(VM, hosts[:3], loads, "id-here") == "id-here"  # none fits: here
    vcpus = {"id-busy": Load(0, 7, 1)}  # memory free, one vCPU left
    assert choose_host(VM, [host("busy")], vcpus, "id-here") == "id-here"


def test_a_container_needs_a_host_with_an_oci_runtime() -> None:
    hosts = [host("plain"), host("oci", oci_runtime="runc")]
    loads = {"id-oci": Load(2048, 4, 4)}
    assert choose_host(BOX, hosts, loads, "id-plain") == "id-oci"
    assert choose_host(VM, hosts, loads, "id-oci") == "id-plain"


def test_a_tie_goes_to_this_host_then_by_name() -> None:
    """Equally allocated hosts: the one that received the request keeps the instance (its
    image is here, nothing is forwarded); between others the name decides."""
    hosts = [host("a"), host("b"), host("c")]
    assert choose_host(VM, hosts, {}, "id-b") == "id-b"
    assert choose_host(VM, hosts, {}, "id-elsewhere") == "id-a"
