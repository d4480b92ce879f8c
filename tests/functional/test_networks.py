"""Networks through the API with the in-memory network host: CRUD, bad input, NICs and MACs,
taps around a VM's life. (Real links, dnsmasq and rules: tests/integration/test_networks.py.)"""

from __future__ import annotations

import asyncio

import httpx

from virtfleet.app.bootstrap import Platform
from virtfleet.network.fake import FakeNetworkManager

from ..yielding import yielding
from .helpers import assert_error, create, wait_op

LAN = {"name": "lan", "subnet": "10.1.0.0/24"}


async def test_create_show_list_delete(api: httpx.AsyncClient) -> None:
    """A created network is shown with its defaults and bridge, listed, and deleted once."""
    r = await api.post("/1.0/networks", json=LAN)
    assert r.status_code == 201, r.text
    net = r.json()
    assert net["spec"]["dhcp_start"] == "10.1.0.128" and net["state"]["bridge"] == "lan"
    assert net["state"]["present"] is True
    assert [n["name"] for n in (await api.get("/1.0/networks")).json()] == ["lan"]
    assert (await api.get("/1.0/networks/lan")).json()["spec"] == net["spec"]
    assert (await api.delete("/1.0/networks/lan")).json() == {"name": "lan", "deleted": True}
    assert (await api.delete("/1.0/networks/lan")).json() == {"name": "lan", "deleted": False}
    assert_error(await api.get("/1.0/networks/lan"), 404, "not_found")


async def test_bad_input_writes_nothing(api: httpx.AsyncClient, platform: Platform) -> None:
    """Invalid CIDR, range outside the subnet, VLAN out of range, unknown fields, a bad name,
    an overlapping subnet, a taken name, a host interface's name: one error each, no record."""
    assert (await api.post("/1.0/networks", json=LAN)).status_code == 201
    revision = await platform.store.revision()
    cases = [
        ({"name": "a1", "subnet": "10.9.0.0/33"}, 400, "invalid_input"),
        (
            {
                "name": "a1",
                "subnet": "10.9.0.0/24",
                "dhcp_start": "10.8.0.2",
                "dhcp_end": "10.9.0.9",
            },
            400,
            "invalid_input",
        ),
        ({"name": "a1", "mode": "bridged", "parent": "br0", "vlan": 5000}, 400, "invalid_input"),
        ({"name": "a1", "subnet": "10.9.0.0/24", "colour": "red"}, 400, "invalid_input"),
        ({"name": "A_1", "subnet": "10.9.0.0/24"}, 400, "invalid_name"),
        ({"name": "a1", "subnet": "10.1.0.0/16"}, 409, "conflict"),
        ({"name": "lan", "subnet": "10.9.0.0/24"}, 409, "already_exists"),
        ({"name": "eth0", "subnet": "10.9.0.0/24"}, 409, "conflict"),
    ]
    for body, status, code in cases:
        assert_error(await api.post("/1.0/networks", json=body), status, code)
    assert await platform.store.revision() == revision
    assert_error(await api.get("/1.0/networks/Bad_Name"), 400, "invalid_name")


async def test_vlan_belongs_to_one_network(api: httpx.AsyncClient) -> None:
    """Two networks cannot claim the same VLAN on the same parent bridge."""
    body = {"name": "v10", "mode": "bridged", "parent": "br0", "vlan": 10}
    assert (await api.post("/1.0/networks", json=body)).status_code == 201
    again = {**body, "name": "v10b"}
    assert "VLAN 10" in assert_error(await api.post("/1.0/networks", json=again), 409, "conflict")
    other = {**body, "name": "v20", "vlan": 20}
    assert (await api.post("/1.0/networks", json=other)).status_code == 201


async def test_nics_get_unique_macs_and_block_deletion(
    api: httpx.AsyncClient, image: str, platform: Platform
) -> None:
    """Network NICs get distinct MACs; a NIC on an unknown network or with a taken MAC is
    refused; a network with NICs on it cannot be deleted; taps exist only while running."""
    await api.post("/1.0/networks", json=LAN)
    nics = [{"mode": "network", "network": "lan"}, {"mode": "network", "network": "lan"}]
    await create(api, "web", start=True, nics=nics)
    vm = (await api.get("/1.0/instances/web")).json()
    macs = [n["mac"] for n in vm["spec"]["nics"]]
    assert len(set(macs)) == 2 and all(m.startswith("52:54:00:") for m in macs)
    host = platform.agent.nics.host
    assert isinstance(host, FakeNetworkManager)
    assert sorted(i for i, _ in host.taps.values()) == ["web", "web"]
    bad = {"name": "x", "image": "tiny", "nics": [{"mode": "network", "network": "nope"}]}
    assert_error(await api.post("/1.0/instances", json=bad), 404, "not_found")
    taken = {"name": "y", "image": "tiny", "nics": [{**nics[0], "mac": macs[0]}]}
    assert_error(await api.post("/1.0/instances", json=taken), 409, "conflict")
    assert "web" in assert_error(await api.delete("/1.0/networks/lan"), 409, "in_use")
    body = {"action": "stop", "force": True}
    await wait_op(api, await api.put("/1.0/instances/web/state", json=body))
    assert host.taps == {}
    await wait_op(api, await api.delete("/1.0/instances/web"))
    assert (await api.delete("/1.0/networks/lan")).json()["deleted"] is True


async def test_two_creates_racing_for_one_mac(
    api: httpx.AsyncClient, image: str, platform: Platform
) -> None:
    """Two creates asking for the same MAC at once (store calls yielding, as real I/O
    does): the MAC is claimed by compare-and-swap, so exactly one is made."""
    yielding(platform.store)
    nics = [{"mode": "user", "mac": "52:54:00:12:34:56"}]
    bodies = [{"name": n, "image": "tiny", "nics": nics} for n in ("a", "b")]
    replies = await asyncio.gather(*(api.post("/1.0/instances", json=b) for b in bodies))
    codes = sorted(r.status_code for r in replies)
    assert codes == [202, 409], [r.text for r in replies]
    refused = next(r for r in replies if r.status_code == 409)
    assert_error(refused, 409, "conflict")
    made = [i["name"] for i in (await api.get("/1.0/instances")).json()]
    assert len(made) == 1
    # Deleted, its MAC is free again (the stale claim is taken over).
    await wait_op(api, await api.delete(f"/1.0/instances/{made[0]}"))
    await create(api, "c", nics=nics)
