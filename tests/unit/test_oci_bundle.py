"""The OCI bundle builder (pure): config.json per case equals its reviewed golden file,
plus the rules the spec must follow (namespaces, limits, capabilities, kinds)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from virtfleet.drivers.oci.bundle import CAPABILITIES, BundleOptions, IdMap, build_config
from virtfleet.drivers.oci.runtime import choose_runtime, crun_blocker
from virtfleet.model.instance import InstanceSpec
from virtfleet.util.cgroups import CgroupLayout

GOLDEN = Path(__file__).parent / "golden"
SPEC = InstanceSpec(name="web-1", kind="container", image="tiny", vcpus=2, memory_mib=256)
CASES = {
    "plain": (SPEC, None),
    "userns-pids": (SPEC.model_copy(update={"pids_max": 100}), IdMap(100_000)),
}


def _config(case: str) -> dict[str, object]:
    spec, userns = CASES[case]
    opts = BundleOptions(Path("/data/run/oci/web-1/rootfs"), "/virtfleet-x/web-1", userns)
    return build_config(spec, opts)


@pytest.mark.parametrize("case", sorted(CASES))
def test_config_matches_golden(case: str) -> None:
    """config.json for each case equals its reviewed golden file."""
    text = json.dumps(_config(case), indent=1, sort_keys=True) + "\n"
    golden = GOLDEN / f"oci-{case}.json"
    if os.environ.get("VIRTFLEET_UPDATE_GOLDEN"):
        golden.write_text(text)
    assert text == golden.read_text()


def test_namespaces_limits_and_isolation() -> None:
    """Own pid/net/ipc/uts/mount namespaces (user only when mapped), limits, seccomp."""
    plain, mapped = _config("plain"), _config("userns-pids")
    kinds = {ns["type"] for ns in plain["linux"]["namespaces"]}  # type: ignore[index]
    assert kinds == {"pid", "network", "ipc", "uts", "mount"}
    assert {"type": "user"} in mapped["linux"]["namespaces"]  # type: ignore[index]
    res = mapped["linux"]["resources"]  # type: ignore[index]
    assert res["memory"]["limit"] == 256 * 1024 * 1024
    assert res["cpu"] == {"quota": 200_000, "period": 100_000}
    assert res["pids"] == {"limit": 100}
    assert plain["hostname"] == "web-1"
    assert "CAP_SYS_ADMIN" not in CAPABILITIES and "CAP_NET_RAW" not in CAPABILITIES
    assert plain["linux"]["seccomp"]["syscalls"][0]["action"] == "SCMP_ACT_ERRNO"  # type: ignore[index]


def test_vm_only_fields_rejected_for_containers_and_back() -> None:
    """A container with disks/accel, or a VM with pids_max, is invalid input."""
    with pytest.raises(ValidationError, match="disks"):
        InstanceSpec(name="c", kind="container", disks=[{"name": "d", "size_gib": 1}])
    with pytest.raises(ValidationError, match="accel"):
        InstanceSpec(name="c", kind="container", accel="tcg")
    with pytest.raises(ValidationError, match="pids_max"):
        InstanceSpec(name="v", pids_max=10)
    with pytest.raises(ValidationError):
        InstanceSpec(name="c", kind="container", pids_max=0)
    assert InstanceSpec(name="c", kind="container", image="tiny").normalized().disks == []


def test_crun_refused_in_hybrid_mode_with_v2_controllers() -> None:
    """crun is ruled out (and runc chosen) when the cgroup2 mount holds controllers."""
    hybrid = CgroupLayout("hybrid", {"memory": Path("/sys/fs/cgroup/memory")}, Path("/u"))
    assert "hugetlb" in crun_blocker(hybrid, "hugetlb\n")
    assert crun_blocker(hybrid, "") == ""
    assert crun_blocker(CgroupLayout("v2", {}, Path("/u")), "cpu memory") == ""
    choice = choose_runtime(hybrid, which=lambda n: f"/usr/bin/{n}")
    assert choice.binary == "/usr/bin/crun"  # /u/cgroup.controllers is unreadable: no blocker
    missing = choose_runtime(hybrid, which=lambda n: None)
    assert missing.binary == "" and "not installed" in missing.reasons["runc"]


def test_container_nics_are_network_veths_only() -> None:
    """A container takes ``mode: network`` NICs (veths); user mode or a NIC model is refused."""
    net = {"mode": "network", "network": "lan"}
    spec = InstanceSpec(name="c", kind="container", image="tiny", nics=[net, net])
    assert [n.network for n in spec.nics] == ["lan", "lan"]
    with pytest.raises(ValidationError, match="user-mode nics not valid for kind 'container'"):
        InstanceSpec(name="c", kind="container", nics=[{"mode": "user"}])
    with pytest.raises(ValidationError, match="nic model"):
        InstanceSpec(name="c", kind="container", nics=[{**net, "model": "e1000"}])


def test_network_capabilities_only_with_nics() -> None:
    """NET_ADMIN and NET_RAW (to bring up eth0, run DHCP, ping) only for a container with NICs."""
    opts = BundleOptions(Path("/r"), "/p/c", None)
    nics = [{"mode": "network", "network": "lan"}]
    with_nic = build_config(
        SPEC.model_copy(update={"nics": InstanceSpec(name="c", kind="container", nics=nics).nics}),
        opts,
    )
    caps = with_nic["process"]["capabilities"]["bounding"]  # type: ignore[index]
    assert {"CAP_NET_ADMIN", "CAP_NET_RAW"} <= set(caps)
    plain = build_config(SPEC, opts)["process"]["capabilities"]["bounding"]  # type: ignore[index]
    assert "CAP_NET_ADMIN" not in plain and "CAP_NET_RAW" not in plain


def test_seccomp_denies_user_namespaces_and_io_uring() -> None:
    """io_uring is denied outright; clone/unshare only with CLONE_NEWUSER set (a masked
    argument test); clone3, whose flags a filter cannot see, answers ENOSYS."""
    rules = _config("plain")["linux"]["seccomp"]["syscalls"]  # type: ignore[index]
    by_name = {name: rule for rule in rules for name in rule["names"]}
    for call in ("io_uring_setup", "io_uring_enter", "io_uring_register"):
        assert by_name[call]["action"] == "SCMP_ACT_ERRNO" and "args" not in by_name[call]
    for call in ("clone", "unshare"):
        rule = by_name[call]
        assert rule["action"] == "SCMP_ACT_ERRNO" and rule["errnoRet"] == 1
        assert rule["args"] == [
            {"index": 0, "op": "SCMP_CMP_MASKED_EQ", "value": 0x10000000, "valueTwo": 0x10000000}
        ]
    assert by_name["clone3"]["errnoRet"] == 38
