"""Networks in a cluster (issue 22 item 7): two daemons on one real etcd, each with its own
data dir and in-memory network back-end (``FakeNetworkManager``; host B's only bridge is
``br1``, A's ``br0``).

A bridged network is one definition every member's agent realises, each reporting ok or
why not; a nat network belongs to one host, exists only there and may reuse another
host's range; NICs on a network the instance's host lacks are refused; placement skips
hosts without the networks; leases reported by the owning host show on every member."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

from tests.functional.cluster import Member, pair
from tests.functional.helpers import assert_error, create, wait_op
from tests.functional.test_ownership import until
from virtfleet.model.network import Lease
from virtfleet.network.fake import FakeNetworkManager
from virtfleet.state.keys import network_hosts_prefix


def fake(m: Member) -> FakeNetworkManager:
    networks = m.platform.host.networks
    assert isinstance(networks, FakeNetworkManager)
    return networks


async def get(api: httpx.AsyncClient, path: str) -> dict[str, Any]:
    r = await api.get(path)
    assert r.status_code == 200, r.text
    return dict(r.json())


def statuses(api: httpx.AsyncClient, name: str) -> Callable[[], Awaitable[dict[str, Any]]]:
    """``{host name: (ok, reason)}`` of network ``name`` as ``api``'s member shows it."""

    async def read() -> dict[str, Any]:
        found = await get(api, f"/1.0/networks/{name}")
        return {h["host_name"]: (h["ok"], h["reason"]) for h in found["hosts"]}

    return read


async def shows(read: Callable[[], Awaitable[Any]], want: Any) -> None:
    async def check() -> bool:
        return bool(await read() == want)

    await until(check)


async def test_bridged_networks_are_realised_on_every_member(tmp_path: Path) -> None:
    async with pair(tmp_path) as (a, b):
        fake(b).bridges = ("br1",)  # B has no br0: the uplink is missing there
        made = await a.api.post(
            "/1.0/networks", json={"name": "lan0", "mode": "bridged", "parent": "br0"}
        )
        missing = "parent 'br0' is not a bridge on this host"
        await shows(statuses(b.api, "lan0"), {"host-a": (True, ""), "host-b": (False, missing)})
        shown = await get(b.api, "/1.0/networks/lan0")
        realised = ("lan0" in fake(a).networks, "lan0" in fake(b).networks)
        # A VLAN of B's bridge, defined through B: realised on B, failed on A.
        vlan = await b.api.post(
            "/1.0/networks",
            json={"name": "vl7", "mode": "bridged", "parent": "br1", "vlan": 7},
        )
        await shows(
            statuses(a.api, "vl7"),
            {"host-a": (False, "parent 'br1' is not a bridge on this host"), "host-b": (True, "")},
        )
        nic = [{"mode": "network", "network": "lan0"}]
        refused = await a.api.post(
            "/1.0/instances", json={"name": "on-b", "image": "tiny", "host": "host-b", "nics": nic}
        )
        gone = await a.api.get("/1.0/instances/on-b")
        await create(b.api, "placed", nics=nic)  # through B, which lacks lan0: placed on A
        placed = await get(b.api, "/1.0/instances/placed")
        await create(a.api, "vlan-user", nics=[{"mode": "network", "network": "vl7"}])
        vlan_user = await get(a.api, "/1.0/instances/vlan-user")
        # Deleted through B: A's agent removes its part, every status goes.
        await wait_op(b.api, await b.api.delete("/1.0/instances/placed"))
        deleted = await b.api.delete("/1.0/networks/lan0")
        await until(lambda: _absent(a, "lan0"))
        left = await a.platform.store.list(network_hosts_prefix("lan0"))
    assert made.status_code == 201, made.text
    assert made.json()["scope"] == "cluster" and made.json()["host"] is None
    assert shown["scope"] == "cluster" and realised == (True, False)
    assert vlan.status_code == 201, vlan.text
    message = assert_error(refused, 409, "network_not_on_host")
    assert message == f"network lan0 is not realised on host host-b: {missing}"
    assert gone.status_code == 404  # nothing was made
    assert placed["owner"]["host"] == a.host_id
    assert vlan_user["owner"]["host"] == b.host_id  # the only host with vl7
    assert deleted.status_code == 200 and deleted.json()["deleted"] is True, deleted.text
    assert left == []


async def _absent(m: Member, name: str) -> bool:
    return name not in fake(m).networks


async def test_nat_networks_belong_to_one_host(tmp_path: Path) -> None:
    async with pair(tmp_path) as (a, b):
        nat = {"mode": "nat", "subnet": "10.50.0.0/24"}
        made_a = await a.api.post("/1.0/networks", json={"name": "nat-a", **nat})
        # B's own nat network, defined through A: same range (the bridges never meet).
        made_b = await a.api.post("/1.0/networks", json={"name": "nat-b", "host": "host-b", **nat})
        await shows(statuses(a.api, "nat-b"), {"host-b": (True, "")})
        taken = await b.api.post("/1.0/networks", json={"name": "nat-a", **nat})
        overlap = await a.api.post(
            "/1.0/networks", json={"name": "nat-c", "mode": "nat", "subnet": "10.50.0.0/25"}
        )
        unknown = await a.api.post("/1.0/networks", json={"name": "nat-z", "host": "host-z", **nat})
        # Defined through A for B, where the name is a host interface: B reports why not.
        clash = {"name": "eth0", "host": "host-b", "mode": "isolated", "subnet": "10.70.0.0/24"}
        made_clash = await a.api.post("/1.0/networks", json=clash)
        await shows(
            statuses(a.api, "eth0"),
            {"host-b": (False, "network name 'eth0' is already a host interface")},
        )
        where = {n: (n in fake(a).networks, n in fake(b).networks) for n in ("nat-a", "nat-b")}
        shown_b = await get(b.api, "/1.0/networks/nat-a")
        wrong_host = await b.api.post(
            "/1.0/instances",
            json={"name": "v1", "image": "tiny", "host": "host-b",
                  "nics": [{"mode": "network", "network": "nat-a"}]},
        )  # fmt: skip
        await create(a.api, "v2", nics=[{"mode": "network", "network": "nat-b"}])
        placed = await get(a.api, "/1.0/instances/v2")
        await create(a.api, "v3", nics=[{"mode": "network", "network": "nat-a"}])
        mac = (await get(a.api, "/1.0/instances/v3"))["spec"]["nics"][0]["mac"]
        fake(a).leased["nat-a"] = [Lease(mac=mac, ip="10.50.0.77", hostname="v3")]

        async def address_on_b() -> list[str]:
            return [x["ip"] for x in (await get(b.api, "/1.0/instances/v3"))["addresses"]]

        await shows(address_on_b, ["10.50.0.77"])
        listed = {i["name"]: i for i in (await b.api.get("/1.0/instances")).json()}
        leases_on_b = (await get(b.api, "/1.0/networks/nat-a"))["state"]["leases"]
    assert made_a.status_code == made_b.status_code == made_clash.status_code == 201
    assert made_a.json()["host"] == a.host_id and made_a.json()["scope"] == "host"
    assert made_b.json()["host_name"] == "host-b"
    assert_error(taken, 409, "already_exists")  # names are unique cluster-wide
    assert "overlaps network nat-a" in assert_error(overlap, 409, "conflict")
    assert assert_error(unknown, 400, "unknown_host").startswith("unknown host 'host-z'")
    assert where == {"nat-a": (True, False), "nat-b": (False, True)}
    assert shown_b["host_name"] == "host-a" and shown_b["state"]["present"] is True
    assert [(h["host_name"], h["ok"]) for h in shown_b["hosts"]] == [("host-a", True)]
    message = assert_error(wrong_host, 409, "network_not_on_host")
    assert (
        message.startswith("network nat-a is host host-a's")
        and "instance v1 on host host-b" in message
    )
    assert placed["owner"]["host"] == b.host_id  # the only host with nat-b
    assert [x["ip"] for x in listed["v3"]["addresses"]] == ["10.50.0.77"]
    assert [(x["mac"], x["ip"]) for x in leases_on_b] == [(mac, "10.50.0.77")]
