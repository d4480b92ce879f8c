"""One place decides a new instance's defaults (model.defaults): a VM from an image and a
VM from a template made from that image agree on every spec field but identity; a template
that sets a field wins; a template made from a VM never carries that VM's identity."""

from __future__ import annotations

from typing import Any

import httpx

from virtfleet.model.defaults import IDENTITY, NOT_TEMPLATED
from virtfleet.model.instance import InstanceSpec
from virtfleet.model.template import TemplateDefaults

from .helpers import assert_error, create, wait_op

# A value different from the default for every field a template can set.
SET_ALL: dict[str, Any] = {
    "vcpus": 2, "max_vcpus": 4, "memory_mib": 320, "max_memory_mib": 512,
    "min_memory_mib": 128, "cpu_limit_pct": 150.0, "cpu_weight": 200,
    "nics": [{"mode": "user", "network": None, "model": "e1000", "restrict": False,
             "name": "lan", "mac": None}],
    "boot": {"kernel": None, "initrd": None, "cmdline": "console=ttyS0"},
    "accel": "tcg", "device_model": "emulated", "firmware": "uefi", "tpm": True, "os": "windows",
    "restart_policy": "on-failure",
    "guest_agent": True, "cloud_init": {"hostname": "tpl-{name}"},
    "autostart": True, "start_order": 3, "start_delay_s": 5.0, "host_shutdown": "suspend",
}  # fmt: skip


async def _op(api: httpx.AsyncClient, r: httpx.Response) -> dict[str, Any]:
    op = await wait_op(api, r)
    assert op["status"] == "success", op
    return op


async def _spec(api: httpx.AsyncClient, name: str) -> dict[str, Any]:
    r = await api.get(f"/1.0/instances/{name}")
    assert r.status_code == 200, r.text
    return dict(r.json()["spec"])


def _without_macs(nics: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**n, "mac": None} for n in nics]


def test_every_spec_field_has_a_default_path() -> None:
    """A field added to InstanceSpec must be templatable, identity or named as not templated:
    otherwise clones could not get it and this test fails."""
    fields = set(InstanceSpec.model_fields)
    assert fields == IDENTITY | NOT_TEMPLATED | set(TemplateDefaults.model_fields)
    assert not IDENTITY & set(TemplateDefaults.model_fields)
    assert set(SET_ALL) == set(TemplateDefaults.model_fields)


async def test_clone_of_an_unset_template_equals_a_vm_from_the_image(
    api: httpx.AsyncClient, image: str
) -> None:
    """x2 from the image and x1 from template t1 (from that image, nothing set) are equal
    in every field except name, UUID, MACs and the disk the template is."""
    await create(api, "x2")
    await _op(api, await api.post("/1.0/templates", json={"name": "t1", "image": image}))
    await _op(api, await api.post("/1.0/templates/t1/instances", json={"names": ["x1"]}))
    x1, x2 = await _spec(api, "x1"), await _spec(api, "x2")
    assert x2["nics"] and x2["nics"][0]["mode"] == "user"  # the default NIC (the bug: none)
    for field in InstanceSpec.model_fields:
        if field in IDENTITY:
            assert x1[field] != x2[field], field
        elif field == "nics":
            assert _without_macs(x1["nics"]) == _without_macs(x2["nics"])
            assert x1["nics"][0]["mac"] != x2["nics"][0]["mac"]
        elif field in ("image", "disks"):
            assert x1["disks"][0]["image"] == "t1" and x2["disks"][0]["image"] == image
        else:
            assert x1[field] == x2[field], field


async def test_a_template_that_sets_a_field_wins(api: httpx.AsyncClient, image: str) -> None:
    """Every templatable field set to a non-default value reaches the clone, and template
    show says which fields the template sets."""
    body = {"name": "big", "image": image, "defaults": SET_ALL}
    await _op(api, await api.post("/1.0/templates", json=body))
    await _op(api, await api.post("/1.0/templates/big/instances", json={"names": ["c1"]}))
    spec = await _spec(api, "c1")
    for field, value in SET_ALL.items():
        if field == "nics":
            assert _without_macs(spec["nics"]) == value
        elif field == "cloud_init":
            assert spec["cloud_init"]["hostname"] == "tpl-c1"
        else:
            assert spec[field] == value, field
    shown = (await api.get("/1.0/templates/big")).json()["effective"]
    assert {v["set_by"] for v in shown.values()} == {"template"}
    await _op(api, await api.post("/1.0/templates", json={"name": "bare", "image": image}))
    bare = (await api.get("/1.0/templates/bare")).json()["effective"]
    assert {v["set_by"] for v in bare.values()} == {"default"}
    assert bare["nics"]["value"][0]["mode"] == "user" and bare["vcpus"]["value"] == 1


async def test_request_overrides_the_template(api: httpx.AsyncClient, image: str) -> None:
    """Settings in the clone request beat the template's; a MAC in a clone request is refused."""
    body = {"name": "t", "image": image, "defaults": {"vcpus": 2, "guest_agent": True}}
    await _op(api, await api.post("/1.0/templates", json=body))
    req = {"names": ["o1"], "vcpus": 3, "nics": []}
    await _op(api, await api.post("/1.0/templates/t/instances", json=req))
    spec = await _spec(api, "o1")
    assert (spec["vcpus"], spec["nics"], spec["guest_agent"]) == (3, [], True)
    req = {"names": ["o3"], "firmware": "uefi", "tpm": True, "os": "windows"}
    await _op(api, await api.post("/1.0/templates/t/instances", json=req))
    spec = await _spec(api, "o3")
    assert (spec["firmware"], spec["tpm"], spec["os"]) == ("uefi", True, "windows")
    bios_tpm = await api.post("/1.0/templates/t/instances", json={"names": ["o4"], "tpm": True})
    assert_error(bios_tpm, 400, "invalid_input")  # was a 500: the spec built did not validate
    assert "a TPM needs UEFI firmware" in bios_tpm.json()["error"]["message"]
    mac = {"names": ["o2"], "nics": [{"mac": "52:54:00:00:00:09"}]}
    assert_error(await api.post("/1.0/templates/t/instances", json=mac), 400, "invalid_input")


async def test_template_from_a_vm_is_generalised(api: httpx.AsyncClient, image: str) -> None:
    """gold's MAC, UUID and literal hostname stay with gold: the template says what it
    dropped, and three clones get three new MACs and UUIDs, all different from gold's."""
    await create(api, "gold", cloud_init={"hostname": "ci-gold"}, vcpus=2)
    gold = await _spec(api, "gold")
    op = await _op(api, await api.post("/1.0/templates", json={"name": "g", "instance": "gold"}))
    dropped = " ".join(op["result"]["generalised"])
    assert gold["nics"][0]["mac"] in dropped and gold["uuid"] in dropped
    assert "'ci-gold' -> 'ci-{name}'" in dropped
    tpl = (await api.get("/1.0/templates/g")).json()
    assert tpl["defaults"]["nics"] is None  # gold had the default NIC: the template leaves it
    assert tpl["effective"]["vcpus"] == {"value": 2, "set_by": "template"}
    await _op(api, await api.post("/1.0/templates/g/instances", json={"names": ["w-{1..3}"]}))
    specs = [await _spec(api, f"w-{i}") for i in (1, 2, 3)]
    macs = {s["nics"][0]["mac"] for s in [gold, *specs]}
    uuids = {s["uuid"] for s in [gold, *specs]}
    assert len(macs) == len(uuids) == 4
    assert [s["cloud_init"]["hostname"] for s in specs] == ["ci-w-1", "ci-w-2", "ci-w-3"]


async def test_a_template_never_stores_a_mac(api: httpx.AsyncClient, image: str) -> None:
    """Defaults naming a MAC are refused: every clone would share it."""
    body = {"name": "m", "image": image, "defaults": {"nics": [{"mac": "52:54:00:00:00:01"}]}}
    assert_error(await api.post("/1.0/templates", json=body), 400, "invalid_input")
    assert (await api.get("/1.0/templates")).json() == []


async def test_api_create_without_nics_gets_the_default_and_explicit_none_gets_none(
    api: httpx.AsyncClient, image: str
) -> None:
    """Omitted nics: one restricted user-mode NIC; an explicit empty list: no NIC; each new
    VM gets its own UUID, a given UUID is kept."""
    await create(api, "a")
    await create(api, "b", nics=[])
    given = "0f0e0d0c-0b0a-4908-8706-050403020100"
    await create(api, "c", uuid=given)
    a, b, c = await _spec(api, "a"), await _spec(api, "b"), await _spec(api, "c")
    assert [(n["mode"], n["restrict"]) for n in a["nics"]] == [("user", True)]
    assert b["nics"] == [] and c["uuid"] == given
    assert a["uuid"] and b["uuid"] and a["uuid"] != b["uuid"]
