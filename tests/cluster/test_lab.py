"""The three-host lab as a user meets it, and its faults: every host online in ``host
list``; a VM created through host 1 for host 3 runs there and its serial console opens
through host 2, and a snapshot of it made through host 1 is made on host 3; a host cut
off (link down) longer than its lease shows offline and comes back by itself; one etcd
member of three lost → writes work; two lost → writes answer 503 ``store_unavailable``
while the guest keeps running; all back → full recovery; a backup schedule the leader
runs fires exactly once although the leader's host dies (daemon, etcd member and QEMUs
killed) before it is due.

One lab for the module (tests run in order; the VM is shared); the last test kills a
host and brings it back, so it goes last."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from datetime import UTC, datetime, timedelta

import psutil
import pytest

from tests.integration.conftest import wait_for
from virtfleet.client import Client
from virtfleet.client import backups as backup_calls
from virtfleet.client.errors import ApiError
from virtfleet.state import identity
from virtfleet.state.keys import claim_scope

from .lab import LEADER_TTL_S, LEASE_S, Lab, LabHost

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("cluster-lab")]

VM = "lab-vm"


def _states(h: LabHost) -> dict[str, str]:
    """Host name → state, as ``virtfleet host list --json`` on ``h`` prints them."""
    out = subprocess.run(
        h.cli("host", "list", "--json"), capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return {row["name"]: row["state"] for row in json.loads(out.stdout)}


def _states_are(h: LabHost, want: dict[str, str]) -> bool:
    try:
        return _states(h) == want
    except AssertionError:
        return False  # the daemon is still starting


def test_host_list_shows_three_hosts_online(lab: Lab) -> None:
    want = {x.name: "online" for x in lab.hosts}
    assert _states(lab.host(2)) == want  # the CLI, through host 2
    for h in (lab.host(1), lab.host(3)):
        assert {x.name: x.state.value for x in h.daemon.client.list_hosts()} == want


@pytest.fixture(scope="module", autouse=True)
def vm(lab: Lab) -> str:
    """A tiny VM created through host 1 on host 3 (by name) before the first test; it
    boots (tens of seconds of TCG on a loaded machine) while the first tests run."""
    one, three = lab.host(1), lab.host(3)
    op = one.daemon.client.create_instance(
        {"name": VM, "image": "tiny", "host": three.name}, start=True
    )
    done = one.daemon.client.wait_operation(op.id, timeout_s=120)
    assert done.status == "success", done
    return VM


def test_a_host_cut_off_longer_than_its_lease_shows_offline_then_heals(lab: Lab) -> None:
    one, two = lab.host(1), lab.host(2)
    online = {x.name: "online" for x in lab.hosts}
    two.link(False)
    try:
        cut = time.monotonic()
        wait_for(
            lambda: _states_are(one, {**online, two.name: "offline"}),
            LEASE_S * 4, f"{two.name} offline as {one.name} sees it",
        )  # fmt: skip
        assert time.monotonic() - cut >= LEASE_S / 3  # not before a renewal was missed
    finally:
        two.link(True)
    wait_for(lambda: _states_are(one, online), 30, f"{two.name} back online by itself")
    wait_for(lambda: _states_are(two, online), 30, f"{two.name} sees everyone online")


async def _console_through(h: LabHost, name: str) -> bytes:
    """Type into ``name``'s serial console opened through ``h``; what came back."""
    target = h.daemon.client.websocket(f"/1.0/instances/{name}/console")
    seen = b""
    # The guest prints its boot marker again: only its shell expands $(hostname).
    line = b"\recho VIRTFLEET-READY hostname=$(hostname)\r"
    want = f"VIRTFLEET-READY hostname={name}".encode()
    async with target.connect() as ws:
        for _ in range(5):  # a loaded TCG guest can drop typed input before its prompt
            await ws.send(line)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 10
            while want not in seen and loop.time() < deadline:
                try:
                    seen += await asyncio.wait_for(ws.recv(decode=False), 1)
                except TimeoutError:
                    continue
            if want in seen:
                break
    return seen


def test_vm_created_through_1_runs_on_3_console_through_2(lab: Lab, vm: str) -> None:
    one, two, three = lab.host(1), lab.host(2), lab.host(3)
    three.daemon.wait_marker(vm)  # booted on host 3
    owner = two.daemon.client.get_instance(vm).status.host
    assert owner == identity.load(three.data_dir).id
    assert three.daemon.run_dir(vm).exists()
    assert not one.daemon.run_dir(vm).exists() and not two.daemon.run_dir(vm).exists()
    seen = asyncio.run(_console_through(two, vm))
    assert f"VIRTFLEET-READY hostname={vm}".encode() in seen, seen[-2000:]
    assert "VIRTFLEET-READY hostname=$(hostname)" in three.daemon.serial_log(vm)  # typed there


def test_snapshot_through_a_non_owner_is_made_on_the_owner(lab: Lab, vm: str) -> None:
    one, two, three = lab.host(1), lab.host(2), lab.host(3)
    op = one.daemon.client.call(backup_calls.create_snapshot(vm, "lab-snap"))
    done = one.daemon.client.wait_operation(op.id, timeout_s=120)
    assert done.status == "success", done
    assert done.host == identity.load(three.data_dir).id  # the owner ran it
    listed = two.daemon.client.call(backup_calls.list_snapshots(vm))  # forwarded too
    assert [s.name for s in listed] == ["lab-snap"]
    assert [s.name for s in three.daemon.client.call(backup_calls.list_snapshots(vm))] == [
        "lab-snap"
    ]
    assert not (one.data_dir / "disks" / vm).exists()  # nothing of it on the non-owner


def _write(client: Client) -> None:
    """One store write: a token."""
    client.create_token("viewer", description="lab write")


def _writes(client: Client) -> bool:
    try:
        _write(client)
    except ApiError:
        return False
    return True


def test_etcd_quorum_one_lost_two_lost_then_recovered(lab: Lab, vm: str) -> None:
    one, two, three = lab.host(1), lab.host(2), lab.host(3)
    qemu = three.daemon.qemu_pid(vm)
    one.link(False)  # its etcd member (maybe the leader) is lost to the others
    try:
        wait_for(lambda: _writes(two.daemon.client), 30, "a write with two members of three")
        _write(three.daemon.client)
        two.link(False)
        try:
            with pytest.raises(ApiError) as refused:
                _write(three.daemon.client)
            assert psutil.Process(qemu).status() != psutil.STATUS_ZOMBIE  # the guest runs on
            three.daemon.type_line(vm, "echo still-$((6*7))")
            wait_for(lambda: "still-42" in three.daemon.serial_log(vm), 30, "the guest answers")
        finally:
            two.link(True)
    finally:
        one.link(True)
    assert refused.value.status == 503 and refused.value.code == "store_unavailable"
    assert "etcd is unavailable" in str(refused.value)
    wait_for(lambda: _writes(three.daemon.client), 30, "writes after the members returned")
    online = {x.name: "online" for x in lab.hosts}
    wait_for(lambda: _states_are(three, online), 30, "every host online again")
    assert three.daemon.qemu_pid(vm) == qemu  # never restarted
    assert three.daemon.client.get_instance(vm).status.power == "running"


SCHEDULE = "lab-daily"
LEADS = claim_scope("leader") + "singletons/"  # the Leadership role the daemons campaign for


def _leader(lab: Lab, via: LabHost) -> LabHost | None:
    """The host leading the cluster-wide singletons (schedules): the oldest claim (None:
    no claim, or etcd did not answer, e.g. while it elects a new etcd leader)."""
    try:
        claims = via.etcd_prefix(LEADS)
    except AssertionError:
        return None
    if not claims:
        return None
    host_id = min(claims, key=lambda claim: claim[2])[1]
    return next(h for h in lab.hosts if identity.load(h.data_dir).id == host_id)


def _backups_of(client: Client, vm: str) -> list[str]:
    """Host ids of the backup operations of ``vm`` (every member lists all operations)."""
    ops = client.list_operations()
    return [op.host for op in ops if op.kind == "backup.create" and op.target == f"instance/{vm}"]


def _ran(client: Client) -> bool:
    [found] = [s for s in client.call(backup_calls.list_schedules()) if s.name == SCHEDULE]
    return found.last_status is not None  # written when the run ended


def test_a_leader_run_schedule_runs_once_though_the_leader_dies(lab: Lab, vm: str) -> None:
    """A daily schedule due within the minute: its leader's host dies before then and is
    back (a follower now) when it is due; the run happens once, on the new leader."""
    wait_for(lambda: _leader(lab, lab.host(1)) is not None, 30, "a singletons leader")
    leader = _leader(lab, lab.host(1))
    assert leader is not None
    rest = [h for h in lab.hosts if h is not leader]
    via = rest[0].daemon.client
    assert _backups_of(via, vm) == []
    # Cron is by the minute: due at the first minute boundary at least 10 s away, once a
    # day, so the leader is dead before it is due and nothing else is due in the test.
    due = (datetime.now(UTC) + timedelta(seconds=70)).replace(second=0, microsecond=0)
    via.call(backup_calls.put_schedule(SCHEDULE, vm, f"{due.minute} {due.hour} * * *"))
    try:
        leader.kill()
        killed = time.monotonic()
        assert datetime.now(UTC) < due, "the kill took longer than the margin before due"
        wait_for(lambda: _leader(lab, rest[0]) in rest, LEADER_TTL_S * 4, "a new leader")
        assert time.monotonic() - killed >= LEADER_TTL_S / 3  # the dead one's lease lapsed
        successor = _leader(lab, rest[0])
        assert successor is not None
    finally:
        leader.restart()  # while the schedule waits: three daemons again when it is due
    online = {x.name: "online" for x in lab.hosts}
    wait_for(lambda: _states_are(leader, online), 60, "every host online again")
    wait_for(lambda: _ran(via), 120, "the scheduled run")
    assert datetime.now(UTC) >= due
    ran_on = _backups_of(leader.daemon.client, vm)
    assert ran_on == [identity.load(successor.data_dir).id]  # once, by the new leader
    [schedule] = rest[1].daemon.client.call(backup_calls.list_schedules())
    assert schedule.last_run is not None and schedule.last_run >= due
    leader.daemon.client.call(backup_calls.delete_schedule(SCHEDULE))
