"""Templates and clones on real QEMU guests: a template from a stopped VM, three linked
clones booting with their own cloud-init hostnames (read by the tiny guest from its
CIDATA CD-ROM), a full clone outliving its template, and the bad-input paths."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from virtfleet.client import ApiError
from virtfleet.client import imaging as calls
from virtfleet.client.calls import Call
from virtfleet.model.operation import Operation

from .conftest import Daemon, module_daemon

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def d(request: pytest.FixtureRequest, tiny_cache: Path) -> Iterator[Daemon]:
    yield from module_daemon(request)


def _run_op(d: Daemon, call: Call[Operation]) -> dict[str, Any]:
    op = d.client.call(call)
    done = d.client.wait_operation(op.id, timeout_s=300)
    assert done.status == "success", done
    return done.result


def _backing(path: Path) -> str:
    out = subprocess.run(
        ["qemu-img", "info", "--output=json", "-U", str(path)],
        capture_output=True, check=True, text=True,
    ).stdout  # fmt: skip
    return str(json.loads(out).get("backing-filename", ""))


def test_linked_clones_boot_with_their_own_cloud_init_hostnames(d: Daemon) -> None:
    """template from a stopped VM -> web-{1..3} linked clones in one operation, all boot,
    each named by its own NoCloud seed (ci-web-N, not the fw_cfg name web-N)."""
    d.create("gold", start=False, cloud_init={"hostname": "ci-{name}"})
    _run_op(d, calls.create_template("goldtpl", instance="gold"))
    tpl = d.client.call(calls.get_template("goldtpl"))
    assert tpl.kind == "template" and oct(os.stat(tpl.path).st_mode & 0o777) == "0o444"
    result = _run_op(d, calls.clone_template("goldtpl", ["web-{1..3}"], start=True))
    assert result["instances"] == ["web-1", "web-2", "web-3"]
    for name in ("web-1", "web-2", "web-3"):
        log = d.wait_marker(name)
        assert f"VIRTFLEET-READY hostname=ci-{name} " in log
        assert _backing(d.data_dir / "disks" / name / "root.qcow2") == tpl.path
    with pytest.raises(ApiError) as err:
        d.client.call(calls.delete_template("goldtpl"))
    assert err.value.code == "in_use"
    assert all(f"web-{i}" in err.value.message for i in (1, 2, 3))


def test_full_clone_survives_its_template(d: Daemon) -> None:
    """A full clone is an independent copy: it boots after its template was deleted."""
    _run_op(d, calls.create_template("onceoff", image="tiny"))
    _run_op(d, calls.clone_template("onceoff", ["solo"], clone="full"))
    assert d.client.call(calls.delete_template("onceoff")) is True
    assert not Path(d.client.get_image("tiny").path).with_name("onceoff.qcow2").exists()
    assert _backing(d.data_dir / "disks" / "solo" / "root.qcow2") == ""
    d.action("solo", "start")
    assert "VIRTFLEET-READY hostname=solo " in d.wait_marker("solo")


def test_bad_clone_requests_leave_nothing_behind(d: Daemon) -> None:
    """A taken name, a running source VM and an impossible size fail cleanly: no VM, no disk."""
    _run_op(d, calls.create_template("badtpl", image="tiny"))
    d.create("taken", start=False)
    before = sorted(i.name for i in d.client.list_instances())
    with pytest.raises(ApiError) as err:
        d.client.call(calls.clone_template("badtpl", ["fresh-1", "taken"]))
    assert err.value.code == "already_exists"
    op = d.client.call(calls.clone_template("badtpl", ["big-{1..2}"], memory_mib=1 << 24))
    done = d.client.wait_operation(op.id, timeout_s=120)
    assert done.status == "failure" and done.error_code == "insufficient_capacity"
    assert sorted(i.name for i in d.client.list_instances()) == before
    for name in ("fresh-1", "big-1", "big-2"):
        assert not (d.data_dir / "disks" / name).exists()
    d.create("runner", start=True)
    with pytest.raises(ApiError) as err:
        d.client.call(calls.create_template("hot", instance="runner"))
    assert err.value.code == "invalid_state"
    assert not (d.data_dir / "images" / "hot.qcow2").exists()
    with pytest.raises(ApiError) as err:
        d.client.call(calls.clone_template("badtpl", ["x"], count=200))
    assert err.value.code == "invalid_input"


def test_emulated_vm_reads_its_seed_from_an_ide_cdrom(d: Daemon) -> None:
    """The legacy device model gets the CIDATA seed as ide-cd; the tiny guest reads it."""
    d.create("oldie", device_model="emulated", cloud_init={"hostname": "legacy-{name}"})
    assert "VIRTFLEET-READY hostname=legacy-oldie " in d.wait_marker("oldie")
    info = d.client.call(calls.guest_info("oldie"))
    assert not info.agent and "guest_agent is off" in info.error
