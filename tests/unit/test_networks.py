"""Pure parts of virtual networks: spec validation, the nftables ruleset (golden), the
dnsmasq configuration and lease parsing, tap names and the QEMU NIC arguments."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from virtfleet.drivers.base import LaunchContext
from virtfleet.drivers.qemu.config import QemuOptions, RunPaths, build_argv
from virtfleet.errors import InvalidNameError
from virtfleet.model.instance import Accel, DeviceModel, InstanceSpec, NicSpec
from virtfleet.model.network import NetworkSpec, overlapping
from virtfleet.network import dnsmasq, firewall, links
from virtfleet.network.links import Link, tap_name
from virtfleet.network.manager import NetworkManager, foreign_owners

GOLDEN = Path(__file__).parent / "golden"


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ({"subnet": "10.1.0.0/33"}, "invalid subnet"),
        ({"subnet": "10.1.0.1/24"}, "host bits set"),
        ({"subnet": "not-a-cidr"}, "invalid subnet"),
        ({"subnet": "fd00::/64"}, "is not IPv4"),
        ({"subnet": "8.8.8.0/24"}, "not a private range"),
        ({"subnet": "10.1.0.0/30"}, "between /8 and /29"),
        ({"subnet": "10.1.0.0/24", "dhcp_start": "10.2.0.5", "dhcp_end": "10.1.0.9"}, "outside"),
        ({"subnet": "10.1.0.0/24", "dhcp_start": "10.1.0.1", "dhcp_end": "10.1.0.9"}, "outside"),
        ({"subnet": "10.1.0.0/24", "dhcp_start": "10.1.0.9", "dhcp_end": "10.1.0.5"}, "after"),
        ({"subnet": "10.1.0.0/24", "dhcp_start": "10.1.0.9"}, "both"),
        ({"subnet": "10.1.0.0/24", "ipv6_subnet": "fd00::/48"}, "/64"),
        ({}, "needs an IPv4 subnet"),
        ({"subnet": "10.1.0.0/24", "vlan": 5}, "needs a bridged network"),
        ({"mode": "bridged", "vlan": 5}, "needs parent"),
        ({"mode": "bridged", "parent": "br0", "vlan": 4095}, "less than or equal to 4094"),
        ({"mode": "bridged", "parent": "br0", "vlan": 0}, "greater than or equal to 1"),
        ({"mode": "bridged", "parent": "br0", "subnet": "10.1.0.0/24"}, "no subnet"),
        ({"mode": "bridged", "parent": "br0", "host": "h1"}, "it takes no host"),
    ],
)
def test_bad_specs_are_refused(fields: dict[str, object], needle: str) -> None:
    """Each malformed network spec fails validation with a message naming the problem."""
    with pytest.raises(ValidationError) as err:
        NetworkSpec.model_validate({"name": "net1", **fields})
    assert needle in str(err.value)


@pytest.mark.parametrize("name", ["a", "Net1", "1net", "net-", "averyveryverylongname", "a_b"])
def test_bad_network_names(name: str) -> None:
    """Network names are interface names: 2-15 chars, lowercase, starting with a letter."""
    with pytest.raises(InvalidNameError):
        NetworkSpec(name=name, subnet="10.1.0.0/24")


def test_scope_and_which_hosts_realise_a_network() -> None:
    """Bridged networks are every host's; a nat/isolated one its owner's only (one recorded
    before networks named their host: every host's, as before)."""
    bridged = NetworkSpec(name="up", mode="bridged", parent="br0", vlan=20)
    owned = NetworkSpec(name="lan", subnet="10.1.0.0/24", host="h1")
    legacy = NetworkSpec(name="old", mode="isolated", subnet="10.2.0.0/24")
    assert (bridged.scope.value, owned.scope.value, legacy.scope.value) == (
        "cluster",
        "host",
        "host",
    )
    assert [s.realised_on("h2") for s in (bridged, owned, legacy)] == [True, False, True]
    assert owned.realised_on("h1")


def test_defaults_and_overlap() -> None:
    """The DHCP range defaults to the subnet's upper half; overlapping subnets are found."""
    spec = NetworkSpec(name="lan", subnet="10.1.0.0/24").with_defaults()
    assert (spec.dhcp_start, spec.dhcp_end, str(spec.gateway)) == (
        "10.1.0.128",
        "10.1.0.254",
        "10.1.0.1/24",
    )
    other = NetworkSpec(name="big", subnet="10.0.0.0/8")
    assert overlapping(spec, [other]) == "big"
    assert overlapping(spec, [NetworkSpec(name="far", subnet="10.2.0.0/24")]) is None


def test_nic_specs() -> None:
    """A network NIC names its network; a user NIC does not; multicast MACs are refused."""
    with pytest.raises(ValidationError):
        NicSpec(mode="network")
    with pytest.raises(ValidationError):
        NicSpec(mode="user", network="lan")
    with pytest.raises(ValidationError, match="multicast"):
        NicSpec(mode="network", network="lan", mac="01:00:5e:00:00:01")


def _nets() -> list[NetworkSpec]:
    return [
        NetworkSpec(
            name="lan", subnet="10.1.0.0/24", ipv6_subnet="fd01::/64", allow_host_tcp=[22]
        ).with_defaults(),
        NetworkSpec(name="iso", mode="isolated", subnet="10.2.0.0/24").with_defaults(),
        NetworkSpec(name="v10", mode="bridged", parent="trunk", vlan=10),
        NetworkSpec(name="v20", mode="bridged", parent="trunk", vlan=20),
    ]


TABLE = firewall.table_for("1a2b3c4d")


def test_ruleset_matches_golden() -> None:
    """The whole nftables script for NAT, isolated and VLAN networks, in the daemon's own
    tables ``virtfleet-<owner>``, equals its golden file."""
    text = firewall.ruleset(_nets(), {"v10": ["vtaaa-1", "vtbbb-1"]}, TABLE)
    golden = GOLDEN / "nft-networks.txt"
    if os.environ.get("VIRTFLEET_UPDATE_GOLDEN"):
        golden.write_text(text)
    assert text == golden.read_text()


def test_no_networks_removes_only_the_daemons_tables() -> None:
    """With no networks the script only deletes this daemon's tables (no empty chains),
    never the old shared ``virtfleet`` pair or another daemon's."""
    assert firewall.ruleset([], {}, TABLE) == (
        "table inet virtfleet-1a2b3c4d\ndelete table inet virtfleet-1a2b3c4d\n"
        "table bridge virtfleet-1a2b3c4d\ndelete table bridge virtfleet-1a2b3c4d\n"
    )


@pytest.mark.parametrize("owner", ["", "a-b", "x y", "a" * 33, 'a"; flush ruleset'])
def test_table_owner_must_be_an_identifier(owner: str) -> None:
    """An owner that is not a short identifier cannot name (or inject into) an nft table."""
    with pytest.raises(ValueError, match="owner"):
        firewall.table_for(owner)


def test_link_local_is_dropped_before_any_accept() -> None:
    """Guests' packets to 169.254.0.0/16 are dropped first in input and forward, so neither
    the NAT "may go out" accept nor an allowed host port lets them reach a metadata address."""
    text = firewall.ruleset(_nets(), {}, TABLE)
    for chain in ("input", "forward"):
        body = text.split(f"chain {chain} {{")[1].split("}\n")[0].splitlines()[2:]
        rules = [r.strip() for r in body if "established" not in r]
        assert rules[0] == 'iifname { "iso", "lan" } ip daddr 169.254.0.0/16 drop', chain


def test_dns_only_to_the_networks_own_server() -> None:
    """A guest's DNS is accepted only to its own network's gateway (IPv4, its IPv6 ::1 or
    on-link), so it cannot ask another network's (or daemon's) dnsmasq for guest names."""
    text = firewall.ruleset(_nets(), {}, TABLE)
    tail = " meta l4proto { tcp, udp } th dport 53 accept"
    dns = [line.strip().removesuffix(tail) for line in text.splitlines() if "dport 53" in line]
    assert dns == [
        'iifname "iso" ip daddr 10.2.0.1',
        'iifname "iso" ip6 daddr { fe80::/10 }',
        'iifname "lan" ip daddr 10.1.0.1',
        'iifname "lan" ip6 daddr { fd01::1, fe80::/10 }',
    ]


def test_ifnames_of_an_nft_listing() -> None:
    """The interface names an old table matches on: single names, anonymous sets and the
    elements of named ``ifname`` sets; set references are not names."""
    listing = {
        "nftables": [
            {"metainfo": {"version": "1.0.6"}},
            {"table": {"family": "bridge", "name": "virtfleet"}},
            {"set": {"name": "vlan_v10", "type": "ifname", "elem": ["vtaaa-1", "vtbbb-1"]}},
            {"set": {"name": "other", "type": "ipv4_addr", "elem": ["10.0.0.1"]}},
            {
                "rule": {
                    "expr": [
                        {"match": {"left": {"meta": {"key": "iifname"}}, "right": "@vlan_v10"}},
                        {"match": {"left": {"meta": {"key": "oifname"}}, "right": "lan"}},
                        {"drop": None},
                    ]
                }
            },
            {
                "rule": {
                    "expr": [
                        {
                            "match": {
                                "left": {"meta": {"key": "iifname"}},
                                "right": {"set": ["iso", "lan2"]},
                            }
                        },
                        {"match": {"left": {"payload": {"field": "dport"}}, "right": 22}},
                    ]
                }
            },
        ]
    }
    assert firewall.ifnames(listing) == {"vtaaa-1", "vtbbb-1", "lan", "iso", "lan2"}


def _link(name: str, alias: str) -> Link:
    return Link(name=name, index=1, kind="bridge", alias=alias, master=None, up=True)


def test_foreign_owners_of_old_tables() -> None:
    """Old shared tables naming only this daemon's links, absent links or host links have
    no other owner (they may go); a link with another daemon's alias names that daemon."""
    host = [
        _link("lan", "virtfleet:me:bridge:lan"),
        _link("eth0", ""),
        _link("vtx-0", "virtfleet:other:tap:web:0:lanb"),
        _link("lanb", "virtfleet:other:bridge:lanb"),
    ]
    assert foreign_owners({"lan", "eth0", "gone"}, host, "me") == set()
    assert foreign_owners({"lan", "vtx-0"}, host, "me") == {"other"}
    assert foreign_owners({"lanb"}, host, "other") == set()


def test_dnsmasq_config(tmp_path: Path) -> None:
    """dnsmasq serves only its bridge, with the range, no upstream and no router if isolated."""
    files = dnsmasq.DnsmasqFiles(tmp_path)
    nat = dnsmasq.config(_nets()[0], files)
    assert "interface=lan\n" in nat and "bind-interfaces\n" in nat and "no-resolv\n" in nat
    assert "dhcp-range=10.1.0.128,10.1.0.254,255.255.255.0,1h\n" in nat
    assert "option:router" not in nat
    assert "dhcp-ignore-clid\n" in nat  # leases by the MACs the platform keeps unique
    assert "dhcp-option=option:router\n" in dnsmasq.config(_nets()[1], files)


def test_leases_are_parsed(tmp_path: Path) -> None:
    """dnsmasq's lease file becomes leases; a '*' hostname is empty; junk lines are skipped."""
    files = dnsmasq.DnsmasqFiles(tmp_path)
    files.leases.write_text(
        "1795757060 52:54:00:ca:ac:cc 10.1.0.213 * 01:52:54:00:ca:ac:cc\n"
        "1795757061 52:54:00:be:03:bb 10.1.0.221 b 01:52:54:00:be:03:bb\n"
        "garbage\n"
    )
    leases = dnsmasq.leases(files)
    assert [(x.mac, x.ip, x.hostname) for x in leases] == [
        ("52:54:00:ca:ac:cc", "10.1.0.213", ""),
        ("52:54:00:be:03:bb", "10.1.0.221", "b"),
    ]


async def test_detach_removes_only_this_daemons_port(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Detaching NIC 0 of ``ct`` deletes this daemon's veth for it, found by its alias (also
    one named before tap names carried the owner), never another daemon's ``ct``'s veth or
    another NIC's."""
    host = [
        _link("vtold-0", "virtfleet:me:veth:ct:0:lan"),
        _link(tap_name("ct", 0, "other"), "virtfleet:other:veth:ct:0:lan"),
        _link(tap_name("ct", 0), ""),  # the old shared name, now someone else's interface
        _link("vtme-1", "virtfleet:me:veth:ct:1:lan"),
    ]
    deleted: list[str] = []
    monkeypatch.setattr(links, "list_links", lambda: host)
    monkeypatch.setattr(links, "delete", deleted.append)
    await NetworkManager(tmp_path, "me").detach_netns("ct", 0)
    assert deleted == ["vtold-0"]


def test_tap_names_fit_ifnamsiz() -> None:
    """Tap names are stable, distinct per instance and NIC, and at most 15 characters."""
    name = tap_name("a" * 63, 7)
    assert len(name) <= 15 and name == tap_name("a" * 63, 7)
    assert tap_name("x", 0) != tap_name("y", 0) != tap_name("x", 1)
    # two daemons' instances of one name get different taps (neither takes the other's)
    assert tap_name("web", 0, "1a2b3c4d") != tap_name("web", 0, "5e6f7a8b") != tap_name("web", 0)
    assert len(tap_name("a" * 63, 7, "1a2b3c4d")) <= 15


def _argv(spec: InstanceSpec, taps: dict[int, str]) -> str:
    ctx = LaunchContext(Accel.TCG, "", {"root": Path("/d/root.qcow2")}, taps=taps)
    return " ".join(build_argv(spec.normalized(), ctx, RunPaths(Path("/r")), QemuOptions()))


def test_network_nics_use_the_agents_taps() -> None:
    """A network NIC opens the agent's tap (no scripts); the model follows the device model
    unless the NIC names one (vmxnet3: an emulated NIC the tiny guest's kernel drives)."""
    nics = [
        NicSpec(mode="network", network="lan", mac="52:54:00:00:00:01"),
        NicSpec(mode="network", network="lan", model="vmxnet3"),
    ]
    argv = _argv(InstanceSpec(name="a", image="t", nics=nics), {0: "vt1-0", 1: "vt1-1"})
    assert "-netdev tap,id=net0,ifname=vt1-0,script=no,downscript=no" in argv
    # q35: each NIC on its own hot-plug root port (rpN), so it can be removed live
    assert "virtio-net-pci,netdev=net0,id=nic0,bus=rp0,mac=52:54:00:00:00:01" in argv
    assert "vmxnet3,netdev=net1,id=nic1,bus=rp1" in argv
    legacy = InstanceSpec(name="a", image="t", nics=nics[:1], device_model=DeviceModel.EMULATED)
    assert "e1000,netdev=net0" in _argv(legacy, {0: "vt1-0"})


async def test_adopt_rewrites_the_rules_for_the_whole_set_and_touches_no_link(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``adopt`` (the realiser's, after creates that each wrote rules for the set they were
    given) writes one ruleset naming every adopted network, and deletes or makes no link."""
    host = [_link("lan", "virtfleet:me:bridge:lan"), _link("iso", "virtfleet:me:bridge:iso")]
    scripts: list[str] = []
    monkeypatch.setattr(links, "list_links", lambda: host)
    monkeypatch.setattr(links, "delete", lambda name: pytest.fail(f"deleted {name}"))
    monkeypatch.setattr(firewall, "apply", scripts.append)
    lan = NetworkSpec(name="lan", subnet="10.1.0.0/24").with_defaults()
    iso = NetworkSpec(name="iso", mode="isolated", subnet="10.2.0.0/24").with_defaults()
    manager = NetworkManager(tmp_path, "me")
    await manager.adopt([lan, iso])
    (script,) = scripts
    assert script == firewall.ruleset([lan, iso], {}, manager.table)
