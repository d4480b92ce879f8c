"""The rule table of live resource changes (model/resources.py): live or next boot, and why."""

from __future__ import annotations

from virtfleet.model.instance import DeviceModel, DiskSpec, InstanceSpec, NicSpec
from virtfleet.model.resources import changes, with_change

BASE = InstanceSpec(
    name="vm",
    image="tiny",
    vcpus=1,
    max_vcpus=4,
    memory_mib=512,
    max_memory_mib=1024,
    nics=[NicSpec()],
).normalized()


def modes(old: InstanceSpec, new: InstanceSpec) -> dict[str, str]:
    return {c.target: c.mode for c in changes(old, new)}


def test_virtio_changes_are_live_and_bounds_wait_for_a_boot() -> None:
    """Balloon, vCPUs, limits, disks and NICs are live on virtio; boot-time bounds are not."""
    new = BASE.model_copy(
        update={
            "memory_mib": 768,
            "vcpus": 3,
            "cpu_limit_pct": 50.0,
            "max_memory_mib": 2048,
            "max_vcpus": 8,
            "disks": [*BASE.disks, DiskSpec(name="data", size_gib=1)],
            "nics": [*BASE.nics, NicSpec(name="extra")],
        }
    )
    assert modes(BASE, new) == {
        "memory_mib": "live",
        "vcpus": "live",
        "cpu_limit_pct": "live",
        "max_memory_mib": "next-boot",
        "max_vcpus": "next-boot",
        "data": "live",
        "extra": "live",
    }


def test_emulated_devices_wait_for_a_boot_except_cpus_and_limits() -> None:
    """No balloon and no PCIe hot-plug on the emulated model: memory and disks wait."""
    old = BASE.model_copy(update={"device_model": DeviceModel.EMULATED})
    new = old.model_copy(
        update={
            "memory_mib": 256,
            "vcpus": 2,
            "disks": [*old.disks, DiskSpec(name="d", size_gib=1)],
        }
    )
    found = {c.target: (c.mode, c.reason) for c in changes(old, new)}
    assert found["vcpus"] == ("live", "")
    assert found["memory_mib"][0] == found["d"][0] == "next-boot"
    assert "emulated" in found["d"][1]


def test_applying_changes_one_by_one_converges() -> None:
    """with_change moves the applied spec until nothing differs; naming a NIC is no change."""
    new = BASE.model_copy(
        update={
            "vcpus": 2,
            "disks": [*BASE.disks, DiskSpec(name="data", size_gib=1)],
            "nics": [NicSpec(name="nic0"), NicSpec(name="b")],
        }
    )
    applied = BASE
    for change in changes(BASE, new):
        applied = with_change(applied, new, change)
    assert changes(applied, new) == []
