"""Virtual networks with real tiny guests, the daemon inside a test-made network namespace.

One daemon and three guests serve every case (booting is the slow part):
``a`` and ``b`` on the NAT network ``lan``, ``c`` on the isolated network ``iso``;
``a``, ``b`` and ``c`` also have a second NIC on a host bridge ``trunk`` made by
the test, ``a`` and ``c`` in VLAN network ``v10``, ``b`` in ``v20``. The NAT
"outside" is a second namespace with an HTTP server, joined by a veth pair.
"""

from __future__ import annotations

import re
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from virtfleet.client import ApiError

from .conftest import _keep_artifacts
from .netlab import OUTSIDE_IP, UPLINK_HOST, Namespace, NsDaemon, ping_ok
from .reaping import reap

pytestmark = pytest.mark.integration
LAN = {"name": "lan", "mode": "nat", "subnet": "10.81.0.0/24", "ipv6_subnet": "fd81::/64"}
ISO = {"name": "iso", "mode": "isolated", "subnet": "10.82.0.0/24"}
VLAN_IPS = {"a": "192.168.50.1", "b": "192.168.50.2", "c": "192.168.50.3"}
LEASE_RE = r"VIRTFLEET-LEASE iface=eth0 ip=([0-9.]+)"


class Lab:
    def __init__(self, d: NsDaemon, host: Namespace, outside: Namespace, token: str) -> None:
        self.d, self.host, self.outside, self.token = d, host, outside, token
        self.ips: dict[str, str] = {}


def _outside(
    host: Namespace, outside: Namespace, root: Path
) -> tuple[subprocess.Popen[bytes], str]:
    host.run("ip", "link", "add", "up0", "type", "veth", "peer", "name", "out0")
    host.run("ip", "link", "set", "out0", "netns", outside.name)
    host.run("ip", "addr", "add", UPLINK_HOST, "dev", "up0")
    host.run("ip", "link", "set", "up0", "up")
    outside.run("ip", "addr", "add", f"{OUTSIDE_IP}/24", "dev", "out0")
    outside.run("ip", "link", "set", "out0", "up")
    www = root / "www"
    www.mkdir()
    token = secrets.token_hex(8)
    (www / "token.txt").write_text(f"TOKEN-{token}\n")
    server = outside.popen(
        ["python3", "-m", "http.server", "8080", "--bind", OUTSIDE_IP, "--directory", str(www)],
        root / "http.log",
    )
    return server, token


@pytest.fixture(scope="module")
def lab(request: pytest.FixtureRequest, tiny_cache: Path) -> Iterator[Lab]:
    failed_before = request.session.testsfailed
    root = Path(tempfile.mkdtemp(prefix="vf8", dir="/tmp"))
    host, outside = Namespace("h"), Namespace("o")
    server = None
    d = NsDaemon(root / "data", host)
    try:
        d.data_dir.mkdir()
        server, token = _outside(host, outside, root)
        host.run("ip", "link", "add", "trunk", "type", "bridge")
        host.run("ip", "link", "set", "trunk", "up")
        d.start()
        op = d.client.build_image("tiny")
        assert d.client.wait_operation(op.id, timeout_s=300).status == "success"
        lab = Lab(d, host, outside, token)
        _networks_and_guests(lab)
        yield lab
    finally:
        if request.session.testsfailed > failed_before and d.data_dir.exists():
            _keep_artifacts("test_networks", d.data_dir)
        d.stop()
        reap(d.data_dir)
        if server is not None:
            server.kill()
        host.delete()
        outside.delete()
        shutil.rmtree(root, ignore_errors=True)


def _networks_and_guests(lab: Lab) -> None:
    c = lab.d.client
    c.create_network(LAN)
    c.create_network(ISO)
    c.create_network({"name": "v10", "mode": "bridged", "parent": "trunk", "vlan": 10})
    c.create_network({"name": "v20", "mode": "bridged", "parent": "trunk", "vlan": 20})
    first = {"a": "lan", "b": "lan", "c": "iso"}
    second = {"a": "v10", "b": "v20", "c": "v10"}
    ops = []
    for name in ("a", "b", "c"):
        nics = [
            {"mode": "network", "network": first[name]},
            {"mode": "network", "network": second[name]},
        ]
        spec = {"name": name, "image": "tiny", "memory_mib": 160, "nics": nics}
        ops.append(c.create_instance(spec, start=True))
    for op in ops:
        assert c.wait_operation(op.id, timeout_s=180).status == "success"
    for name in ("a", "b", "c"):
        lab.d.wait_marker(name, timeout_s=120)
        lab.ips[name] = lab.d.console_has(name, LEASE_RE, 90).group(1)
        lab.d.run_in_guest(name, f"ip addr add {VLAN_IPS[name]}/24 dev eth1; ip link set eth1 up")
    # c's isolated network gives it no router: add one, so only the host's rules stop it.
    lab.d.run_in_guest("c", "ip route add default via 10.82.0.1")


def test_guests_get_leases_reported_by_vm_show(lab: Lab) -> None:
    """Each guest's DHCP lease (seen on its console) is in its network's subnet and is
    what `vm show` reports for its NIC, from dnsmasq's lease file."""
    assert lab.ips["a"].startswith("10.81.0.") and lab.ips["b"].startswith("10.81.0.")
    assert lab.ips["c"].startswith("10.82.0.")
    for name in ("a", "b", "c"):
        inst = lab.d.client.get_instance(name)
        nic0 = inst.spec.nics[0]
        assert nic0.mac and re.fullmatch(r"52:54:00(:[0-9a-f]{2}){3}", nic0.mac)
        assert [(a.ip, a.mac) for a in inst.addresses if a.nic == 0] == [(lab.ips[name], nic0.mac)]
    macs = [n.mac for i in lab.d.client.list_instances() for n in i.spec.nics]
    assert len(macs) == len(set(macs)) == 6
    net = lab.d.client.get_network("lan")
    assert {lease.ip for lease in net.state.leases} >= {lab.ips["a"], lab.ips["b"]}
    assert net.state.users == ["a", "b"] and net.state.dnsmasq_pid
    # The agent's realiser adopted what the service made (no second create) and reports
    # this host's leases for the other members (every 2 s, when they changed).
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        (mine,) = lab.d.client.get_network("lan").hosts
        if {lab.ips["a"], lab.ips["b"]} <= {lease.ip for lease in mine.leases}:
            break
        time.sleep(0.5)
    assert (mine.ok, mine.reason) == (True, "")
    assert {lease.ip for lease in mine.leases} >= {lab.ips["a"], lab.ips["b"]}
    assert [(h.ok, h.reason) for h in lab.d.client.get_network("v10").hosts] == [(True, "")]


def test_guests_on_one_network_ping_each_other(lab: Lab) -> None:
    """a and b, both on NAT network lan, reach each other."""
    assert ping_ok(lab.d, "a", lab.ips["b"])
    assert ping_ok(lab.d, "b", lab.ips["a"])


def test_ipv6_router_advertisements_give_guests_addresses(lab: Lab) -> None:
    """lan also has fd81::/64: dnsmasq's router advertisements give a and b SLAAC addresses
    in it, and a reaches b over IPv6."""
    pattern = r"inet6 (fd81:[0-9a-f:]+)/64"
    addr_b = None
    deadline = time.monotonic() + 60
    while addr_b is None and time.monotonic() < deadline:
        found = re.search(pattern, lab.d.run_in_guest("b", "ip -6 addr show dev eth0"))
        addr_b = found.group(1) if found else None
        time.sleep(1)
    assert addr_b, "b got no address from fd81::/64"
    out = lab.d.run_in_guest("a", f"ping -6 -c 2 -W 2 {addr_b} >/dev/null && echo V6=$((2*3))")
    assert "V6=6" in out


def test_guest_on_another_network_cannot_reach_them(lab: Lab) -> None:
    """c (isolated network iso) cannot reach a, and a cannot reach c."""
    assert not ping_ok(lab.d, "c", lab.ips["a"])
    assert not ping_ok(lab.d, "a", lab.ips["c"])


def test_nat_guest_reaches_outside_isolated_does_not(lab: Lab) -> None:
    """a fetches a page from the HTTP server in the "outside" namespace through NAT;
    c, on an isolated network (with a default route added by hand), cannot."""
    out = lab.d.run_in_guest("a", _http_get(OUTSIDE_IP, 8080, "/token.txt"))
    assert f"TOKEN-{lab.token}" in out
    out = lab.d.run_in_guest("c", _http_get(OUTSIDE_IP, 8080, "/token.txt"))
    assert f"TOKEN-{lab.token}" not in out


def _http_get(ip: str, port: int, path: str) -> str:
    # busybox nc: the tiny guest's static busybox wget crashes (segfault) here.
    return f"printf 'GET {path} HTTP/1.0\\r\\n\\r\\n' | nc -w 5 {ip} {port}"


def test_guest_reaches_only_dhcp_dns_on_the_host(lab: Lab) -> None:
    """A TCP service on the host (listening on every address) is unreachable from a guest,
    while the network's DNS server answers it by the other guest's DHCP hostname."""
    listener = lab.host.popen(
        ["python3", "-m", "http.server", "8099", "--bind", "0.0.0.0"], lab.d.data_dir / "h.log"
    )
    try:
        time.sleep(1.0)
        fetch = "import urllib.request as u; print(u.urlopen('http://10.81.0.1:8099/').status)"
        assert lab.host.run("python3", "-c", fetch).strip() == "200"  # the service is up
        out = lab.d.run_in_guest("a", _http_get("10.81.0.1", 8099, "/"))
        assert "HTTP/1.0 200" not in out
        out = lab.d.run_in_guest("a", "nslookup b.lan.vf 10.81.0.1")
        assert lab.ips["b"] in out
    finally:
        listener.kill()


def test_vlan_networks_pass_traffic_only_between_same_tag(lab: Lab) -> None:
    """On the host bridge ``trunk``, a and c (VLAN 10) reach each other; b (VLAN 20) reaches
    neither, though all three NICs are on the same bridge and subnet."""
    assert ping_ok(lab.d, "a", VLAN_IPS["c"])
    assert not ping_ok(lab.d, "a", VLAN_IPS["b"])
    assert not ping_ok(lab.d, "b", VLAN_IPS["c"])


def _refused(lab: Lab, body: dict[str, object], code: str) -> None:
    before = lab.host.snapshot()
    with pytest.raises(ApiError) as err:
        lab.d.client.create_network(body)
    assert err.value.code == code, err.value
    assert lab.host.snapshot() == before


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"name": "dup", "subnet": "10.81.0.128/25"}, "conflict"),  # overlaps lan
        ({"name": "bad", "subnet": "10.90.0.0/33"}, "invalid_input"),
        ({"name": "bad", "subnet": "10.90.0.1/24"}, "invalid_input"),  # host bits set
        (
            {
                "name": "bad",
                "subnet": "10.90.0.0/24",
                "dhcp_start": "10.91.0.10",
                "dhcp_end": "10.91.0.20",
            },
            "invalid_input",
        ),
        ({"name": "up0", "subnet": "10.90.0.0/24"}, "conflict"),  # a host interface's name
        ({"name": "hostnet", "subnet": "10.250.0.0/16"}, "conflict"),  # the host's own subnet
        ({"name": "v99", "mode": "bridged", "parent": "trunk", "vlan": 4095}, "invalid_input"),
        ({"name": "v11", "mode": "bridged", "parent": "trunk", "vlan": 10}, "conflict"),
        ({"name": "v12", "mode": "bridged", "parent": "nosuch", "vlan": 12}, "conflict"),
        ({"name": "lan", "subnet": "10.95.0.0/24"}, "already_exists"),
    ],
)
def test_bad_network_leaves_links_and_rules_unchanged(
    lab: Lab, body: dict[str, object], code: str
) -> None:
    """Every refused network: a one-line error with a stable code, and `ip -j link` and
    `nft -j list ruleset` in the daemon's namespace exactly as before."""
    _refused(lab, body, code)


def test_deleting_a_network_in_use_is_refused(lab: Lab) -> None:
    """lan carries a and b: deleting it is `in_use`, and nothing changes."""
    before = lab.host.snapshot()
    with pytest.raises(ApiError) as err:
        lab.d.client.delete_network("lan")
    assert err.value.code == "in_use"
    assert lab.host.snapshot() == before


def test_dead_dnsmasq_is_restarted(lab: Lab) -> None:
    """The agent supervises dnsmasq: killed, it runs again within seconds with the same
    configuration (leases kept in its lease file)."""
    old = lab.d.client.get_network("iso").state.dnsmasq_pid
    assert old
    subprocess.run(["kill", "-9", str(old)], check=True)
    deadline = time.monotonic() + 30
    new = None
    while time.monotonic() < deadline:
        new = lab.d.client.get_network("iso").state.dnsmasq_pid
        if new and new != old:
            break
        time.sleep(0.5)
    assert new and new != old
    assert lab.ips["c"] in {x.ip for x in lab.d.client.get_network("iso").state.leases}


def test_agent_restart_keeps_traffic_and_reconciles(lab: Lab) -> None:
    """A ping from a to b runs across a daemon restart without losing a packet; meanwhile
    lan's dnsmasq was killed and an orphan bridge and tap appeared: the restarted agent
    starts dnsmasq again and removes the orphans, and the rules are the same."""
    owner = _owner(lab)
    rules_before = _rules_without_handles(lab)
    lab.d.type_line("a", f"ping -c 40 -i 0.25 {lab.ips['b']} > /tmp/ping.log 2>&1 &")
    time.sleep(1.0)
    lab.d.stop()
    pid = int((lab.d.data_dir / "networks/lan/dnsmasq.pid").read_text())
    subprocess.run(["kill", str(pid)], check=True)
    lab.host.run("ip", "link", "add", "ghost", "type", "bridge")
    lab.host.run("ip", "link", "set", "ghost", "alias", f"virtfleet:{owner}:bridge:ghost")
    lab.host.run("ip", "tuntap", "add", "vtghost-0", "mode", "tap")
    lab.host.run("ip", "link", "set", "vtghost-0", "alias", f"virtfleet:{owner}:tap:zz:0:lan")
    lab.d.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and "ghost" in lab.host.run("ip", "-br", "link"):
        time.sleep(0.2)
    assert "ghost" not in lab.host.run("ip", "-br", "link")
    new_pid = lab.d.client.get_network("lan").state.dnsmasq_pid
    assert new_pid and new_pid != pid
    assert _rules_without_handles(lab) == rules_before
    time.sleep(10)  # the ping's 40 packets take 10 s
    out = lab.d.run_in_guest("a", "tail -3 /tmp/ping.log")
    assert "40 packets transmitted, 40 packets received" in out, out


def _owner(lab: Lab) -> str:
    alias = lab.host.run("ip", "-o", "link", "show", "lan")
    return re.search(r"alias virtfleet:([0-9a-f]+):bridge:lan", alias).group(1)  # type: ignore[union-attr]


def _rules_without_handles(lab: Lab) -> object:
    _, rules = lab.host.snapshot()

    def strip(node: object) -> object:
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items() if k != "handle"}
        if isinstance(node, list):
            return [strip(v) for v in node]
        return node

    return strip(rules)
