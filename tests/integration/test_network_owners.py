"""Two daemons on one host (one test-made network namespace), each with its own NAT network
and a container named ``ct`` on it: each writes only its own nftables tables, keeps its
rules, bridge and veth when the other restarts, and their guests cannot reach each other.
No NAT guest reaches a link-local address (a "metadata service" at 169.254.169.254 in the
"outside" namespace) or a daemon's TCP API port on the host.
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
from virtfleet.drivers.oci.driver import cgroup_mounts
from virtfleet.network.links import tap_name

from .conftest import _keep_artifacts, wait_for
from .containers import IMAGE, Containers, _safe_list
from .netlab import Namespace, NsDaemon
from .reaping import reap

pytestmark = pytest.mark.integration
NETS = {
    "a": {"name": "lana", "mode": "nat", "subnet": "10.86.0.0/24"},
    "b": {"name": "lanb", "mode": "nat", "subnet": "10.87.0.0/24"},
}
UPLINK, OUTSIDE, METADATA = "10.250.1.1", "10.250.1.2", "169.254.169.254"
API_PORT = 18006  # daemon b's TCP listener, on every address of the test namespace


class Lab:
    def __init__(self, root: Path, host: Namespace, outside: Namespace) -> None:
        self.host, self.outside = host, outside
        self.d = {key: NsDaemon(root / key, host) for key in NETS}
        self.d["b"].serve_args = ["--listen", f"0.0.0.0:{API_PORT}"]
        self.ct = {key: Containers(d) for key, d in self.d.items()}
        self.ips: dict[str, str] = {}
        self.token = ""

    def owner(self, key: str) -> str:
        return Settings(data_dir=self.d[key].data_dir).instance_id

    def table(self, key: str) -> str:
        return f"virtfleet-{self.owner(key)}"

    def tables(self) -> set[str]:
        return {line.strip() for line in self.host.run("nft", "list", "tables").splitlines()}

    def rules(self, key: str) -> object:
        """Daemon ``key``'s inet table as JSON, without the kernel's handles."""
        listing = json.loads(self.host.run("nft", "-j", "list", "table", "inet", self.table(key)))
        return _strip(listing)

    def veth(self, key: str) -> dict[str, object] | None:
        """The host end of ``key``'s container ``ct`` (named for that daemon)."""
        name = tap_name("ct", 0, self.owner(key))
        found = [x for x in json.loads(self.host.run("ip", "-j", "link")) if x["ifname"] == name]
        return found[0] if found else None

    def kept(self, key: str) -> tuple[int | None, list[Path]]:
        """``key``'s dnsmasq pid and the cgroup directories of its ``ct``."""
        pid = self.d[key].client.get_network(NETS[key]["name"]).state.dnsmasq_pid
        parent = self.ct[key].parent
        return pid, [m / parent / "ct" for m in cgroup_mounts() if (m / parent / "ct").is_dir()]

    def restart(self, key: str) -> None:
        self.d[key].stop()
        self.d[key].start()
        wait_for(lambda: self.d[key].client.get_instance("ct").status.pid is not None, 30, "ct")

    def sh(self, key: str, script: str) -> tuple[int, str]:
        out = self.ct[key].exec("ct", "sh", "-c", script, timeout_s=30)
        return out.exit_code, out.stdout

    def ping(self, key: str, ip: str) -> bool:
        return self.sh(key, f"ping -c 2 -W 2 {ip}")[0] == 0

    def http(self, key: str, ip: str) -> str:
        return self.sh(key, f"printf 'GET /token.txt HTTP/1.0\\r\\n\\r\\n' | nc -w 5 {ip} 8080")[1]

    def connects(self, key: str, ip: str, port: int) -> bool:
        return self.sh(key, f"nc -w 3 {ip} {port} </dev/null")[0] == 0


def _strip(node: object) -> object:
    if isinstance(node, dict):
        return {k: _strip(v) for k, v in node.items() if k != "handle"}
    if isinstance(node, list):
        return [_strip(v) for v in node]
    return node


def _outside(lab: Lab, root: Path) -> subprocess.Popen[bytes]:
    """A veth to the "outside" namespace, which also holds the metadata address; a web
    server there on every address serves a token."""
    host, outside = lab.host, lab.outside
    host.run("ip", "link", "add", "up0", "type", "veth", "peer", "name", "out0")
    host.run("ip", "link", "set", "out0", "netns", outside.name)
    host.run("ip", "addr", "add", f"{UPLINK}/24", "dev", "up0")
    host.run("ip", "link", "set", "up0", "up")
    host.run("ip", "route", "add", f"{METADATA}/32", "via", OUTSIDE)
    outside.run("ip", "addr", "add", f"{OUTSIDE}/24", "dev", "out0")
    outside.run("ip", "addr", "add", f"{METADATA}/32", "dev", "out0")
    outside.run("ip", "link", "set", "out0", "up")
    www = root / "www"
    www.mkdir()
    lab.token = f"TOKEN-{root.name}"
    (www / "token.txt").write_text(f"{lab.token}\n")
    return outside.popen(
        ["python3", "-m", "http.server", "8080", "--bind", "0.0.0.0", "--directory", str(www)],
        root / "http.log",
    )


def _start(lab: Lab) -> None:
    for key, d in lab.d.items():
        d.data_dir.mkdir()
        d.start()
        op = d.client.build_image(IMAGE, builder="container-tiny")
        assert d.client.wait_operation(op.id, timeout_s=300).status == "success"
        d.client.create_network(NETS[key])
        lab.ct[key].create("ct", nics=[{"mode": "network", "network": NETS[key]["name"]}])
    for key, d in lab.d.items():
        found: list[str] = []

        def leased(d: NsDaemon = d, found: list[str] = found) -> bool:
            found[:] = [a.ip for a in d.client.get_instance("ct").addresses if a.nic == 0]
            return bool(found)

        wait_for(leased, 90, f"a lease of {key}'s ct")
        lab.ips[key] = found[0]


@pytest.fixture(scope="module")
def lab(request: pytest.FixtureRequest) -> Iterator[Lab]:
    if shutil.which("runc") is None or shutil.which("busybox") is None:
        pytest.skip("container network tests need runc and busybox (scripts/bootstrap.sh)")
    failed_before = request.session.testsfailed
    root = Path(tempfile.mkdtemp(prefix="vfno", dir="/tmp"))
    root.chmod(0o711)  # the containers' (user namespace) root must reach their rootfs
    lab = Lab(root, Namespace("no"), Namespace("nx"))
    server = None
    try:
        server = _outside(lab, root)
        _start(lab)
        yield lab
    finally:
        if request.session.testsfailed > failed_before:
            for d in lab.d.values():
                if d.data_dir.exists():
                    _keep_artifacts("test_network_owners", d.data_dir)
        if server is not None:
            server.kill()
        _teardown(lab, root)


def _teardown(lab: Lab, root: Path) -> None:
    for key, d in lab.d.items():
        for inst in _safe_list(d):
            with contextlib.suppress(ApiError, AssertionError):
                lab.ct[key].delete(inst.name)
        d.stop()
        reap(d.data_dir)
    lab.host.delete()
    lab.outside.delete()
    shutil.rmtree(root, ignore_errors=True)


def test_each_daemon_writes_only_its_own_tables(lab: Lab) -> None:
    """Each daemon's rules are in ``inet virtfleet-<id>`` and name only its own bridge; no
    shared ``virtfleet`` table; both containers named ``ct`` have their own veth, each on
    its own daemon's bridge."""
    tables = lab.tables()
    assert {f"table inet {lab.table('a')}", f"table inet {lab.table('b')}"} <= tables
    assert "table inet virtfleet" not in tables
    for key, other in (("a", "b"), ("b", "a")):
        text = lab.host.run("nft", "list", "table", "inet", lab.table(key))
        assert f'"{NETS[key]["name"]}"' in text and f'"{NETS[other]["name"]}"' not in text
        veth = lab.veth(key)
        assert veth is not None and veth["master"] == NETS[key]["name"]


def test_a_restart_keeps_the_other_daemons_rules_and_guests(lab: Lab) -> None:
    """Restarting b (its start-up reconcile) leaves a's table, veth, dnsmasq, container
    cgroups and traffic as they were, and the other way round; a's and b's guests cannot
    reach each other."""
    for key, other in (("b", "a"), ("a", "b")):
        before, veth, kept = lab.rules(other), lab.veth(other), lab.kept(other)
        assert kept[1], f"no cgroup of {other}'s ct found"
        lab.restart(key)
        assert lab.rules(other) == before
        assert lab.veth(other) == veth
        assert lab.kept(other) == kept
        assert lab.token in lab.http(other, OUTSIDE)
    assert lab.ping("a", "10.86.0.1") and lab.ping("b", "10.87.0.1")
    assert not lab.ping("a", lab.ips["b"])
    assert not lab.ping("b", lab.ips["a"])


def test_guests_ask_only_their_own_networks_dns(lab: Lab) -> None:
    """Each ``ct`` resolves its own name at its own gateway, but asking the other daemon's
    dnsmasq (through the host) gets no answer naming the other ``ct``."""
    gateway = {"a": "10.86.0.1", "b": "10.87.0.1"}
    for key, other in (("b", "a"), ("a", "b")):
        own, theirs = NETS[key]["name"], NETS[other]["name"]
        assert lab.ips[key] in lab.sh(key, f"nslookup ct.{own}.vf {gateway[key]}")[1]
        out = lab.sh(key, f"nslookup ct.{theirs}.vf {gateway[other]}")[1]
        assert lab.ips[other] not in out


def _legacy(lab: Lab, ifname: str, port: str = "") -> None:
    """An old-version shared table pair naming ``ifname`` (harmless rules: discard port)."""
    elements = f' elements = {{ "{port}" }};' if port else ""
    lab.host.run(
        "sh",
        "-c",
        "nft -f - <<'EOF'\n"
        "table inet virtfleet {\n"
        "  chain input {\n"
        "    type filter hook input priority filter; policy accept;\n"
        f'    iifname {{ "{ifname}", "gone0" }} udp dport 9 drop\n'
        "  }\n"
        "}\n"
        f"table bridge virtfleet {{\n  set vlan_v10 {{ type ifname;{elements} }}\n}}\n"
        "EOF\n",
    )


def test_old_shared_tables_are_removed_only_by_their_owner(lab: Lab) -> None:
    """Old shared tables naming b's bridge survive a's restart (b's guests keep them until
    b is upgraded) and go when b restarts; naming a's bridge and veth, a's restart
    removes them."""
    _legacy(lab, "lanb")
    lab.restart("a")
    assert {"table inet virtfleet", "table bridge virtfleet"} <= lab.tables()
    lab.restart("b")
    wait_for(lambda: "table inet virtfleet" not in lab.tables(), 30, "old tables removed")
    assert "table bridge virtfleet" not in lab.tables()
    veth_a = lab.veth("a")
    assert veth_a is not None
    _legacy(lab, "lana", str(veth_a["ifname"]))
    lab.restart("a")
    wait_for(lambda: "table bridge virtfleet" not in lab.tables(), 30, "old tables removed")
    assert "table inet virtfleet" not in lab.tables()


def test_nat_guest_cannot_reach_link_local_metadata(lab: Lab) -> None:
    """The outside namespace serves the same page at 10.250.1.2 and 169.254.169.254 (the
    host reaches both); NAT guests get it from the first, never from the link-local one."""
    url = f"http://{METADATA}:8080/token.txt"
    fetch = f"import urllib.request as u; print(u.urlopen('{url}', timeout=5).read())"
    assert lab.token in lab.host.run("python3", "-c", fetch)
    for key in ("b", "a"):
        assert lab.token in lab.http(key, OUTSIDE)
        assert lab.token not in lab.http(key, METADATA)


def test_guests_cannot_reach_a_daemons_api_port(lab: Lab) -> None:
    """b serves its API on every address of the host: the host itself connects, no guest
    of either daemon does, through its gateway or the host's uplink address."""
    probe = f"import socket; socket.create_connection(('{UPLINK}', {API_PORT}), 5); print('OK')"
    assert lab.host.run("python3", "-c", probe).strip() == "OK"
    for key, gateway in (("a", "10.86.0.1"), ("b", "10.87.0.1")):
        assert not lab.connects(key, gateway, API_PORT)
        assert not lab.connects(key, UPLINK, API_PORT)


def test_a_daemon_cannot_take_the_others_bridge_or_subnet(lab: Lab) -> None:
    """b asking for a network named like a's bridge, or in a's subnet, is a conflict (the
    first one says whose interface it is), and the namespace's links and rules are as
    before."""
    before = lab.host.snapshot()
    with pytest.raises(ApiError) as err:
        lab.d["b"].client.create_network({"name": "lana", "subnet": "10.88.0.0/24"})
    assert err.value.code == "conflict" and "another virtfleet daemon" in str(err.value)
    with pytest.raises(ApiError) as err:
        lab.d["b"].client.create_network({"name": "lanc", "subnet": "10.86.0.0/24"})
    assert err.value.code == "conflict"
    assert lab.host.snapshot() == before


def test_a_daemon_never_takes_over_the_others_bridge(lab: Lab) -> None:
    """b's network lanx lost its bridge while b was down, and a made its own lanx: b's
    restart leaves a's bridge alone (no alias, address, dnsmasq or rules of b's on it) and
    b's delete of lanx does not remove it; a's delete does."""
    b, a = lab.d["b"].client, lab.d["a"].client
    b.create_network({"name": "lanx", "mode": "nat", "subnet": "10.89.0.0/24"})
    lab.d["b"].stop()
    pidfile = lab.d["b"].data_dir / "networks/lanx/dnsmasq.pid"
    subprocess.run(["kill", pidfile.read_text().strip()], check=True)
    lab.host.run("ip", "link", "del", "lanx")
    a.create_network({"name": "lanx", "mode": "nat", "subnet": "10.90.0.0/24"})
    alias = _link(lab, "lanx")["ifalias"]
    lab.d["b"].start()
    wait_for(lambda: b.get_instance("ct").status.pid is not None, 30, "b's ct")
    link = _link(lab, "lanx")
    assert link["ifalias"] == alias and f":{lab.owner('a')}:" in str(alias)
    assert [x["local"] for x in link["addr_info"] if x["family"] == "inet"] == ["10.90.0.1"]
    assert b.get_network("lanx").state.dnsmasq_pid is None
    assert '"lanx"' not in lab.host.run("nft", "list", "table", "inet", lab.table("b"))
    b.delete_network("lanx")
    assert _link(lab, "lanx")["ifalias"] == alias
    a.delete_network("lanx")
    assert "lanx" not in lab.host.run("ip", "-br", "link")


def _link(lab: Lab, name: str) -> dict[str, object]:
    [link] = json.loads(lab.host.run("ip", "-j", "-d", "addr", "show", "dev", name))
    return link  # type: ignore[no-any-return]
