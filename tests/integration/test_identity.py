"""Every copy is a new machine, on real guests: linked clones of a template made from a VM
that ran boot together on one network with MACs, leases, SMBIOS UUIDs and cloud-init
instance-ids of their own (four clones show it as well as ten would, at a fraction of the
TCG boot time on 2 cores); a backup restored to a new VM runs beside its original; an OVA
imported twice gives two machines. The daemon runs in a test network namespace."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from virtfleet.client import ApiError
from virtfleet.client import backups as bcalls
from virtfleet.client import imaging as calls
from virtfleet.client.calls import Call
from virtfleet.model.operation import Operation

from .netlab import NsDaemon, daemon_on_a_lab_network

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]
LEASE_RE = r"VIRTFLEET-LEASE iface=eth0 ip=([0-9.]+)"
READY_RE = r"VIRTFLEET-READY hostname=(\S+) .* uuid=(\S+) iid=(\S+) mac=(\S+)"
NIC = [{"mode": "network", "network": "lab"}]
CLONES = 4


@pytest.fixture(scope="module")
def d(tiny_cache: Path) -> Iterator[NsDaemon]:
    yield from daemon_on_a_lab_network("id", "10.91.0.0/24", None)


def _run(d: NsDaemon, call: Call[Operation], timeout_s: float = 300) -> dict[str, Any]:
    done = d.client.wait_operation(d.client.call(call).id, timeout_s=timeout_s)
    assert done.status == "success", done
    return done.result


def _identity(d: NsDaemon, name: str) -> tuple[str, str, str, str, str]:
    """(hostname, uuid, instance-id, mac) from the guest's console and its leased IP."""
    ready = d.console_has(name, READY_RE, 300)  # the clones boot at once on 2 cores
    lease = d.console_has(name, LEASE_RE, 120)
    hostname, uuid, iid, mac = ready.groups()
    return hostname, uuid, iid, mac, lease.group(1)


def test_clones_of_a_used_vm_are_distinct_machines(d: NsDaemon) -> None:
    """gold runs, stops, becomes a template; web-{1..4} start together: distinct MACs,
    leases, UUIDs and instance-ids, each what the API says, none of them gold's."""
    d.create("gold", nics=NIC, memory_mib=128, cloud_init={"hostname": "ci-gold"})
    gold = _identity(d, "gold")
    d.action("gold", "stop", force=True)
    made = _run(d, calls.create_template("gold-tpl", instance="gold"))
    assert any("MAC" in g for g in made["generalised"]), made
    clones = calls.clone_template("gold-tpl", [f"web-{{1..{CLONES}}}"], start=True, memory_mib=128)
    _run(d, clones, 600)
    seen = [_identity(d, f"web-{i}") for i in range(1, CLONES + 1)]
    for i, (hostname, uuid, _iid, mac, _ip) in enumerate(seen, start=1):
        spec = d.client.get_instance(f"web-{i}").spec
        assert (hostname, uuid, mac) == (f"ci-web-{i}", spec.uuid, spec.nics[0].mac)
    for column in range(1, 5):  # uuid, instance-id, mac, lease
        values = {row[column] for row in [gold, *seen]}
        assert len(values) == CLONES + 1, (column, [row[column] for row in [gold, *seen]])
    for name in [f"web-{i}" for i in range(2, CLONES + 1)]:
        d.action(name, "stop", force=True)


def test_restore_to_new_runs_beside_the_original(d: NsDaemon) -> None:
    """A backup of running web-1 restored --to a new VM starts while web-1 runs, with its
    own MAC, lease and UUID."""
    _run(d, bcalls.create_backup("web-1"), 600)
    backup = d.client.call(bcalls.list_backups("web-1"))[0]
    _run(d, bcalls.restore_backup(backup.id, "web-1-copy", start=True), 600)
    original, copy = _identity(d, "web-1"), _identity(d, "web-1-copy")
    assert copy[0] == "ci-web-1-copy"
    assert all(a != b for a, b in zip(original[1:], copy[1:], strict=True)), (original, copy)
    assert d.client.get_instance("web-1").status.power == "running"
    d.action("web-1-copy", "stop", force=True)


def test_an_ova_imported_twice_is_two_machines(d: NsDaemon) -> None:
    """gold exported as an OVA (with its MAC) imports twice with new MACs; --keep-macs while
    gold exists is refused for the MAC and leaves no VM or image behind."""
    out = d.data_dir / "export"
    out.mkdir(exist_ok=True)
    _run(d, calls.export_ova("gold", str(out / "gold.ova")), 600)
    for name in ("o1", "o2"):
        _run(d, calls.import_ova(str(out / "gold.ova"), name=name), 600)
    macs = [d.client.get_instance(n).spec.nics[0].mac for n in ("gold", "o1", "o2")]
    uuids = [d.client.get_instance(n).spec.uuid for n in ("gold", "o1", "o2")]
    assert len(set(macs)) == len(set(uuids)) == 3, (macs, uuids)
    op = d.client.call(calls.import_ova(str(out / "gold.ova"), name="o3", keep_macs=True))
    done = d.client.wait_operation(op.id, timeout_s=600)
    assert done.status == "failure" and done.error_code == "conflict", done
    assert re.search(re.escape(str(macs[0])), done.message or ""), done
    with pytest.raises(ApiError):
        d.client.get_instance("o3")
    assert not [i for i in d.client.list_images() if i.name.startswith("o3-")]
