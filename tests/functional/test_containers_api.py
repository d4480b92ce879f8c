"""Container rules through the public API with the fake platform: kinds and images must
match, container-only verbs refuse VMs, and VM-only fields are refused for containers."""

from __future__ import annotations

import httpx
import pytest

from .helpers import create

pytestmark = pytest.mark.usefixtures("image")


async def test_container_from_a_vm_disk_image_is_refused(api: httpx.AsyncClient) -> None:
    """A container needs a rootfs image; the qcow2 ``tiny`` is a disk: 400, nothing made."""
    r = await api.post("/1.0/instances", json={"name": "c", "kind": "container", "image": "tiny"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_input", r.text
    assert "container rootfs" in r.json()["error"]["message"]
    assert (await api.get("/1.0/instances")).json() == []


async def test_vm_only_fields_are_refused_for_containers(api: httpx.AsyncClient) -> None:
    """accel / disks / max_vcpus / a user-mode NIC on a container, pids_max on a VM: 400."""
    bodies = [
        {"name": "c", "kind": "container", "image": "tiny", "accel": "tcg"},
        {"name": "c", "kind": "container", "image": "tiny", "max_vcpus": 4},
        {"name": "c", "kind": "container", "image": "tiny", "nics": [{"mode": "user"}]},
        {"name": "v", "image": "tiny", "pids_max": 100},
    ]
    for body in bodies:
        r = await api.post("/1.0/instances", json=body)
        assert r.status_code == 400, r.text
        assert r.json()["error"]["code"] == "invalid_input"


async def test_container_verbs_refuse_vms(api: httpx.AsyncClient) -> None:
    """exec, limits and rootfs snapshots on a VM: 400 'not a container'; unknown: 404."""
    await create(api, name="vm1", start=True)
    r = await api.post("/1.0/instances/vm1/exec", json={"command": ["true"]})
    assert r.status_code == 400 and "not a container" in r.json()["error"]["message"]
    r = await api.patch("/1.0/instances/vm1/limits", json={"memory_mib": 128})
    assert r.status_code == 400 and "not a container" in r.json()["error"]["message"]
    r = await api.post("/1.0/instances/vm1/rootfs-snapshots", json={"name": "s"})
    assert r.status_code == 400
    r = await api.post("/1.0/instances/ghost/exec", json={"command": ["true"]})
    assert r.status_code == 404
    r = await api.post("/1.0/instances/vm1/exec", json={"command": []})
    assert r.status_code == 400
