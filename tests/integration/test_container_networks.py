"""System containers on virtual networks, the daemon inside a test-made network namespace.

One daemon and three guests serve every case: container ``ct`` and tiny VM ``vm`` on
the NAT network ``lan``, container ``far`` (made with ``container create --network``)
on the isolated network ``iso``. A container
NIC is a veth whose host end is on the network's bridge and whose peer is ``eth0`` in
the container's netns (moved there between ``runc create`` and ``start``); the
container's init brings it up and runs busybox ``udhcpc`` against the network's dnsmasq.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from virtfleet.app.settings import Settings
from virtfleet.client import ApiError
from virtfleet.network.links import tap_name

from .conftest import VIRTFLEET, _keep_artifacts, wait_for
from .containers import IMAGE, Containers, _safe_list
from .netlab import Namespace, NsDaemon, ping_ok
from .reaping import reap

pytestmark = pytest.mark.integration
LAN = {"name": "lan", "mode": "nat", "subnet": "10.84.0.0/24"}
ISO = {"name": "iso", "mode": "isolated", "subnet": "10.85.0.0/24"}
LEASE_RE = r"VIRTFLEET-LEASE iface=eth0 ip=([0-9.]+)"


class Lab:
    def __init__(self, d: NsDaemon, ns: Namespace) -> None:
        self.d, self.ns, self.ct = d, ns, Containers(d)
        self.ips: dict[str, str] = {}

    def host_end(self, name: str) -> str:
        """The host end of ``name``'s NIC 0 (tap names carry the daemon's id)."""
        return tap_name(name, 0, Settings(data_dir=self.d.data_dir).instance_id)

    def links(self) -> dict[str, dict[str, object]]:
        return {link["ifname"]: link for link in json.loads(self.ns.run("ip", "-j", "link"))}

    def leased(self, name: str) -> str:
        """The address the API reports for ``name``'s NIC 0 (from dnsmasq's leases)."""
        found: list[str] = []

        def seen() -> bool:
            found[:] = [a.ip for a in self.d.client.get_instance(name).addresses if a.nic == 0]
            return bool(found)

        wait_for(seen, 90, f"a lease of {name}")
        return found[0]

    def ping(self, container: str, ip: str) -> bool:
        out = self.ct.exec(container, "ping", "-c", "2", "-W", "2", ip)
        return out.exit_code == 0


def _containers(lab: Lab) -> None:
    c = lab.d.client
    c.create_network(LAN)
    c.create_network(ISO)
    vm = c.create_instance(
        {
            "name": "vm",
            "image": "tiny",
            "memory_mib": 160,
            "nics": [{"mode": "network", "network": "lan"}],
        },
        start=True,
    )
    lab.ct.create("ct", nics=[{"mode": "network", "network": "lan"}])
    lab.ct.cli("container", "create", "far", "--image", IMAGE, "--network", "iso", "--start")
    assert c.wait_operation(vm.id, timeout_s=180).status == "success"
    lab.d.wait_marker("vm", timeout_s=120)
    lab.ips["vm"] = lab.d.console_has("vm", LEASE_RE, 90).group(1)
    for name in ("ct", "far"):
        lab.ips[name] = lab.leased(name)
    # iso gives no router: add one, so only the host's isolation rules stop far.
    lab.ct.sh("far", "ip route add default via 10.85.0.1")


@pytest.fixture(scope="module")
def lab(request: pytest.FixtureRequest, tiny_cache: Path) -> Iterator[Lab]:
    if shutil.which("runc") is None or shutil.which("busybox") is None:
        pytest.skip("container network tests need runc and busybox (scripts/bootstrap.sh)")
    failed_before = request.session.testsfailed
    root = Path(tempfile.mkdtemp(prefix="vfcn", dir="/tmp"))  # 0700: rootfs mounts are in /run
    ns = Namespace("cn")
    d = NsDaemon(root / "data", ns)
    lab = Lab(d, ns)
    try:
        d.data_dir.mkdir()
        d.start()
        for image, builder in (("tiny", None), (IMAGE, "container-tiny")):
            op = d.client.build_image(image, builder=builder) if builder else None
            op = op or d.client.build_image(image)
            assert d.client.wait_operation(op.id, timeout_s=300).status == "success"
        _containers(lab)
        yield lab
    finally:
        if request.session.testsfailed > failed_before and d.data_dir.exists():
            _keep_artifacts("test_container_networks", d.data_dir)
        _teardown(lab, root)


def _teardown(lab: Lab, root: Path) -> None:
    d = lab.d
    for inst in _safe_list(d):
        with contextlib.suppress(ApiError, AssertionError):
            lab.ct.delete(inst.name)
    d.stop()
    reap(d.data_dir)
    lab.ns.delete()
    shutil.rmtree(root, ignore_errors=True)


def test_container_lease_is_reported_like_a_vm(lab: Lab) -> None:
    """ct's eth0 has the spec's MAC and the address dnsmasq leased to it, which the API
    reports under ``addresses`` just as for the VM; the veth's host end is on lan's bridge."""
    inst = lab.d.client.get_instance("ct")
    mac = inst.spec.nics[0].mac
    assert mac and lab.ips["ct"].startswith("10.84.0.")
    assert [(a.ip, a.mac, a.network) for a in inst.addresses] == [(lab.ips["ct"], mac, "lan")]
    eth0 = lab.ct.sh("ct", "ip addr show eth0")  # busybox ip: no JSON
    assert f"link/ether {mac}" in eth0 and f"inet {lab.ips['ct']}/24" in eth0
    assert "VIRTFLEET-LEASE iface=eth0" in lab.ct.cli("vm", "logs", "ct").stdout
    assert f"{lab.ips['ct']} (lan)" in lab.ct.cli("vm", "show", "ct").stdout
    host_end = lab.links()[lab.host_end("ct")]
    assert host_end["master"] == "lan" and "UP" in host_end["flags"]  # type: ignore[operator]
    assert lab.d.client.get_network("lan").state.users == ["ct", "vm"]
    vm_mac = lab.d.client.get_instance("vm").spec.nics[0].mac
    assert vm_mac != mac


def test_container_and_vm_ping_each_other(lab: Lab) -> None:
    """On one NAT network, the container reaches the VM and the VM reaches the container."""
    assert lab.ping("ct", lab.ips["vm"])
    assert ping_ok(lab.d, "vm", lab.ips["ct"])


def test_container_on_another_network_cannot_reach_them(lab: Lab) -> None:
    """far (isolated network iso) reaches its own gateway's DHCP side only, not ct or vm."""
    assert lab.ips["far"].startswith("10.85.0.")
    assert not lab.ping("far", lab.ips["ct"])
    assert not lab.ping("far", lab.ips["vm"])
    assert not lab.ping("ct", lab.ips["far"])


def test_veth_survives_daemon_restart_and_goes_with_stop(lab: Lab) -> None:
    """A daemon killed and restarted re-adopts ct and keeps its veth (traffic flows); a hard
    reset after adoption gives the new netns a new veth on lan (the same MAC leases again);
    stop removes the veth."""
    host_end = lab.host_end("ct")
    lab.d.kill9()
    lab.d.start()
    wait_for(lambda: lab.d.client.get_instance("ct").status.reason == "re-adopted", 30, "adopt")
    assert host_end in lab.links()
    assert lab.ping("ct", lab.ips["vm"])
    pid = lab.d.client.get_instance("ct").status.pid
    lab.ct.action("ct", "restart", force=True)
    assert lab.d.client.get_instance("ct").status.pid != pid
    assert lab.links()[host_end]["master"] == "lan"
    wait_for(lambda: lab.ping("ct", lab.ips["vm"]), 90, "ct back on lan")
    assert lab.leased("ct") == lab.ips["ct"]
    lab.ct.action("ct", "stop", timeout_s=20)
    assert host_end not in lab.links()


def test_bad_container_nics_leave_nothing(lab: Lab) -> None:
    """A user-mode NIC or a NIC model on a container, or an unknown network: a clear error
    with a stable code, no instance written, no link made."""
    before = lab.ns.snapshot()
    names = {i.name for i in lab.d.client.list_instances()}
    bad = {
        "invalid_input": [{"mode": "user"}],
        "not_found": [{"mode": "network", "network": "nope"}],
    }
    for code, nics in bad.items():
        spec = {"name": "bad", "kind": "container", "image": IMAGE, "nics": nics}
        with pytest.raises(ApiError) as err:
            lab.d.client.create_instance(spec, start=True)
        assert err.value.code == code, err.value
    argv = [VIRTFLEET, "--data-dir", str(lab.d.data_dir), "container", "create", "bad"]
    cli = subprocess.run(
        [*argv, "--image", IMAGE, "--network", "nope", "--start"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cli.returncode != 0 and "nope" in cli.stderr and len(cli.stderr.splitlines()) == 1
    assert {i.name for i in lab.d.client.list_instances()} == names
    assert lab.ns.snapshot() == before
