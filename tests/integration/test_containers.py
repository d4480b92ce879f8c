"""Real system containers through the daemon: lifecycle, isolation, limits, exec, console,
logs, adoption after SIGKILL, crash and restart policy, snapshots, bad input."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from virtfleet.client import container_calls

from .conftest import VIRTFLEET, in_pty, read_until, wait_for
from .containers import IMAGE, Containers, api_error, running_containers

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def ct() -> Iterator[Containers]:
    yield from running_containers()


def _console_prompt(fd: int) -> None:
    """Press Enter until the container's shell answers with a prompt (it drops early input)."""
    for _ in range(20):
        os.write(fd, b"\r")
        if b"# " in read_until(fd, b"# ", 1):
            return
    raise AssertionError("no shell prompt on the container console")


def _gone(pid: int) -> bool:
    """``pid`` exited (a zombie its parent has not reaped yet counts as gone)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _power(ct: Containers, name: str) -> str:
    return str(ct.client.get_instance(name).status.power)


def test_lifecycle_through_cli_leaves_nothing(ct: Containers) -> None:
    """create/start, pause (exec refused), resume, graceful stop, restart, delete via the CLI;
    after delete no runtime state, mount or cgroup of the container remains."""
    ct.cli("container", "create", "life", "--image", IMAGE, "--memory", "64M", "--start")
    assert _power(ct, "life") == "running"
    ct.cli("vm", "pause", "life")
    assert _power(ct, "life") == "paused"
    assert ct.cli("exec", "life", "--", "true", check=False).returncode != 0
    ct.cli("vm", "resume", "life")
    assert ct.cli("exec", "life", "--", "echo", "hi").stdout == "hi\n"
    started = time.monotonic()
    ct.cli("vm", "stop", "life", "--timeout", "20")
    assert time.monotonic() - started < 15  # the init acted on SIGTERM: no SIGKILL timeout
    assert "virtfleet-init: stopping" in ct.cli("vm", "logs", "life").stdout
    ct.cli("vm", "start", "life")
    pid = ct.client.get_instance("life").status.pid
    ct.cli("vm", "reboot", "life")
    assert ct.client.get_instance("life").status.pid != pid
    assert ct.cli("vm", "list").stdout.count("container") == 1
    ct.cli("vm", "stop", "life", "--force")
    ct.cli("vm", "delete", "life", "--disks")
    assert ct.leftovers("life") == []


def test_stop_kills_an_init_that_ignores_sigterm(ct: Containers) -> None:
    """An init that does not act on SIGTERM (stopped from the host) is killed after the
    timeout: the stop succeeds, and nothing of the container is left."""
    ct.create("stubborn")
    pid = ct.client.get_instance("stubborn").status.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    started = time.monotonic()
    ct.action("stubborn", "stop", timeout_s=2)
    assert time.monotonic() - started >= 2  # waited for the graceful stop first
    assert _power(ct, "stubborn") == "stopped" and _gone(pid)
    ct.delete("stubborn")
    assert ct.leftovers("stubborn") == []


def test_isolation_processes_hostname_network(ct: Containers) -> None:
    """Containers see neither host processes nor each other's; own hostname and netns (lo)."""
    ct.create("iso-a")
    ct.create("iso-b")
    ct.sh("iso-b", "setsid sleep 4321 </dev/null >/dev/null 2>&1 &")
    ps_a = ct.sh("iso-a", "ps -o pid,args")
    assert "4321" not in ps_a and "virtfleet" not in ps_a and "runc" not in ps_a
    assert len([p for p in os.listdir("/proc") if p.isdigit()]) > 20  # the host has many
    assert len(ct.sh("iso-a", "ls /proc | grep -c '^[0-9]'").split()) == 1
    assert int(ct.sh("iso-a", "ls /proc | grep -c '^[0-9]*$'")) < 10
    assert ct.sh("iso-a", "hostname").strip() == "iso-a"
    assert ct.sh("iso-b", "hostname").strip() == "iso-b"
    links = ct.sh("iso-a", "ip -o link").splitlines()
    assert len(links) == 1 and ": lo:" in links[0]
    ino_a = ct.sh("iso-a", "readlink /proc/self/ns/net")
    assert ino_a != ct.sh("iso-b", "readlink /proc/self/ns/net")
    assert ino_a.strip() != os.readlink("/proc/self/ns/net")
    uid_map = ct.sh("iso-a", "cat /proc/self/uid_map").split()
    assert uid_map[0] == "0" and uid_map[1] != "0"  # container root is not host root


def test_memory_hog_oom_killed_inside_its_cgroup(ct: Containers) -> None:
    """A hog over the 64 MiB limit is OOM-killed; the container, its neighbour, the host go on."""
    ct.create("hog", memory_mib=64)
    ct.create("calm")
    out = ct.exec("hog", "sh", "-c", "head -c 300m /dev/zero | tail > /dev/null")
    assert out.exit_code != 0
    memcg = ct.cgroup("memory", "hog")
    assert int((memcg / "memory.failcnt").read_text()) > 0
    assert int((memcg / "memory.max_usage_in_bytes").read_text()) <= 64 * 1024 * 1024
    assert "oom_kill " in (memcg / "memory.oom_control").read_text()
    assert int((memcg / "memory.oom_control").read_text().split("oom_kill ")[1].split()[0]) >= 1
    assert _power(ct, "hog") == "running" and ct.sh("hog", "echo ok") == "ok\n"
    assert ct.sh("calm", "echo ok") == "ok\n"


def test_fork_bomb_stops_at_pids_limit(ct: Containers) -> None:
    """A fork bomb is held at pids_max; the host can still fork and a force stop ends it all."""
    ct.create("bomb", pids_max=40)
    bomb = "b() { b & b & wait; }; b"  # every process forks two and stays: exponential
    ct.sh("bomb", f"setsid sh -c '{bomb}' </dev/null >/dev/null 2>&1 &")
    pids = ct.cgroup("pids", "bomb")

    def refused() -> int:  # pids.events: "max N" = N forks refused at the limit
        return int((pids / "pids.events").read_text().split()[1])

    wait_for(lambda: refused() > 10, 60, "the bomb to hit the pids limit")
    assert int((pids / "pids.peak").read_text()) <= 40  # never above the limit
    assert subprocess.run(["true"], check=False).returncode == 0  # the host still forks
    ct.action("bomb", "stop", force=True)
    assert _power(ct, "bomb") == "stopped"
    ct.delete("bomb")
    assert ct.leftovers("bomb") == []


def test_live_limits_and_invalid_limits(ct: Containers) -> None:
    """Limits change live (cgroup files); invalid ones are refused and change nothing."""
    ct.create("lim", memory_mib=128, pids_max=100)
    ct.cli("container", "limits", "lim", "--memory", "96M", "--pids-max", "50", "--cpus", "2")
    limit = ct.cgroup("memory", "lim") / "memory.limit_in_bytes"
    assert int(limit.read_text()) == 96 * 1024 * 1024
    assert (ct.cgroup("pids", "lim") / "pids.max").read_text().strip() == "50"
    assert (ct.cgroup("cpu", "lim") / "cpu.cfs_quota_us").read_text().strip() == "200000"
    assert ct.client.get_instance("lim").spec.memory_mib == 96
    ct.client.call(container_calls.set_limits("lim", {"pids_max": None}))  # lift the limit
    assert (ct.cgroup("pids", "lim") / "pids.max").read_text().strip() == "max"
    for bad in ({"memory_mib": 1}, {"pids_max": 0}, {"vcpus": 0}, {"vcpus": 999}):
        err = api_error(ct.client.call, container_calls.set_limits("lim", bad))
        assert err.status in (400, 409, 422), err
    assert int(limit.read_text()) == 96 * 1024 * 1024


def test_exec_console_and_logs(ct: Containers) -> None:
    """exec returns exit code and output; the console is the init's shell; logs keep history."""
    ct.create("con")
    out = ct.exec("con", "sh", "-c", "echo out; echo err >&2; exit 3")
    assert (out.exit_code, out.stdout, out.stderr) == (3, "out\n", "err\n")
    proc, fd = in_pty([VIRTFLEET, "--data-dir", str(ct.d.data_dir), "vm", "console", "con"])
    try:
        assert b"Ctrl-]" in read_until(fd, b"Ctrl-]", 20)
        _console_prompt(fd)
        os.write(fd, b"echo console-$((6*7)) > /tmp/mark; cat /tmp/mark\r")
        assert b"console-42" in read_until(fd, b"console-42\r\n", 20)
        os.write(fd, b"\x1d")
        assert proc.wait(10) == 0
    finally:
        proc.kill()
        os.close(fd)
    assert ct.sh("con", "cat /tmp/mark") == "console-42\n"
    log = ct.cli("vm", "logs", "con").stdout
    assert "virtfleet-init: con up" in log and "console-42" in log


def test_data_dir_stays_0700_while_user_namespaced_containers_run(ct: Containers) -> None:
    """The containers' mapped root (an unprivileged host uid) reaches its rootfs in the
    runtime directory: the data directory and everything directly in it stay 0700."""
    checks = json.loads(ct.cli("host", "check", "--json").stdout)["checks"]
    assert [c["detail"][:3] for c in checks if c["name"] == "user namespaces"] == ["on:"]
    ct.create("priv")
    assert ct.sh("priv", "echo up") == "up\n"
    pid = ct.client.get_instance("priv").status.pid
    host_root = int(Path(f"/proc/{pid}/uid_map").read_text().split()[1])
    assert host_root >= 100000  # a mapped root: "others" to the data directory
    data = ct.d.data_dir
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert [p.name for p in data.iterdir() if p.is_dir() and p.stat().st_mode & 0o077] == []
    mountinfo = Path("/proc/self/mountinfo").read_text().splitlines()
    targets = {Path(line.split()[4]) for line in mountinfo}
    assert ct.mounts / "priv" in targets
    assert [t for t in targets if t.is_relative_to(data)] == []
    ct.delete("priv")
    assert ct.leftovers("priv") == [] and not (ct.mounts / "priv").exists()


def test_adoption_after_daemon_sigkill(ct: Containers) -> None:
    """Containers outlive a SIGKILLed daemon; the next one re-adopts them (exec, console)."""
    ct.create("keep")
    pid = ct.client.get_instance("keep").status.pid
    ct.d.kill9()
    assert psutil.pid_exists(pid)
    ct.d.start()
    wait_for(lambda: ct.client.get_instance("keep").status.reason == "re-adopted", 30, "adopt")
    assert ct.client.get_instance("keep").status.pid == pid
    assert ct.sh("keep", "echo alive") == "alive\n"
    proc, fd = in_pty([VIRTFLEET, "--data-dir", str(ct.d.data_dir), "vm", "console", "keep"])
    try:
        read_until(fd, b"Ctrl-]", 20)
        _console_prompt(fd)
        os.write(fd, b"echo adopted-$((6*7))\r")
        assert b"adopted-42" in read_until(fd, b"adopted-42\r\n", 20)
        os.write(fd, b"\x1d")
    finally:
        proc.kill()
        os.close(fd)


def test_crash_follows_restart_policy(ct: Containers) -> None:
    """Killing a container's init marks it crashed; restart_policy=always starts it again,
    restart_policy=no leaves it crashed with nothing left behind."""
    ct.create("phoenix", restart_policy="always")
    ct.create("dodo")
    old = ct.client.get_instance("phoenix").status.pid
    os.kill(old, 9)
    os.kill(ct.client.get_instance("dodo").status.pid, 9)

    def restarted() -> bool:
        inst = ct.client.get_instance("phoenix")
        return inst.status.power == "running" and inst.status.pid not in (None, old)

    wait_for(restarted, 60, "the policy restart")
    assert ct.client.get_instance("phoenix").status.restarts >= 1
    wait_for(lambda: _power(ct, "dodo") == "crashed", 30, "dodo crashed")
    kinds = [e.kind for e in ct.client.list_events(limit=200) if e.target == "instance/phoenix"]
    assert "instance.crashed" in kinds and "instance.restarted" in kinds
    assert ct.leftovers("dodo") == []


def test_rootfs_snapshot_and_restore(ct: Containers) -> None:
    """A stopped container's rootfs is snapshotted; later changes are undone by a restore."""
    ct.create("snap")
    ct.sh("snap", "echo one > /root/state")
    ct.action("snap", "stop")
    ct.cli("container", "snapshot", "snap", "s1")
    ct.action("snap", "start")
    ct.sh("snap", "echo two > /root/state; touch /root/extra")
    err = api_error(ct.client.call, container_calls.create_snapshot("snap", "s2"))
    assert err.code == "invalid_state"  # only stopped containers
    ct.action("snap", "stop")
    ct.cli("container", "restore", "snap", "s1")
    ct.action("snap", "start")
    assert ct.sh("snap", "cat /root/state; ls /root") == "one\nstate\n"


def test_bad_input_is_refused_and_leaves_nothing(ct: Containers) -> None:
    """Invalid limits, VM-only fields, unknown image, name collision, exec into a stopped
    container or of a missing command, a missing rootfs file: clear errors, nothing left."""
    base = {"kind": "container", "image": IMAGE}
    for bad in ({"pids_max": 0}, {"memory_mib": 1}, {"accel": "tcg"}, {"disks": [{"size_gib": 1}]}):
        err = api_error(ct.client.create_instance, {"name": "bad", **base, **bad}, start=True)
        assert (err.status, err.code) == (400, "invalid_input"), bad
    err = api_error(ct.client.create_instance, {"name": "bad", "kind": "container"}, start=True)
    assert err.code == "invalid_input" and "image" in err.message
    err = api_error(ct.client.create_instance, {"name": "bad", **base, "image": "nope"}, True)
    assert err.code == "not_found"
    assert [i.name for i in ct.client.list_instances() if i.name == "bad"] == []
    ct.create("dup", start=False)
    err = api_error(ct.client.create_instance, {"name": "dup", **base}, start=False)
    assert err.code == "already_exists"
    err = api_error(ct.exec, "dup", "true")
    assert err.code == "invalid_state"
    ct.action("dup", "start")
    err = api_error(ct.exec, "dup", "no-such-command")
    assert err.code == "invalid_input" and "not found" in err.message
    ct.delete("dup")
    # The rootfs tarball vanished: the start fails cleanly and leaves nothing.
    tar = ct.d.data_dir / "images" / f"{IMAGE}.rootfs.tar"
    moved = tar.with_suffix(".away")
    tar.rename(moved)
    try:
        op = ct.client.create_instance({"name": "norootfs", **base}, start=True)
        done = ct.client.wait_operation(op.id, timeout_s=120)
        assert done.status == "failure" and done.error_code == "image_error", done
    finally:
        moved.rename(tar)
    assert ct.leftovers("norootfs") == [] and ct.leftovers("dup") == []


def test_debian_12_container_and_host_check(ct: Containers) -> None:
    """The debootstrap debian-12 image runs as a container with its own init; `host check`
    names the runtime in use and why crun is or is not usable."""
    op = ct.client.build_image("debian12", builder="container-debian-12")
    assert ct.client.wait_operation(op.id, timeout_s=1500).status == "success"
    ct.create("deb", image="debian12", memory_mib=256)
    assert ct.sh("deb", "cat /etc/debian_version").startswith("12.")
    assert "bash" in ct.sh("deb", "ls /bin")
    ct.action("deb", "stop")  # dash as PID 1 runs the same init: a graceful stop
    ct.delete("deb")
    assert ct.leftovers("deb") == []
    check = ct.cli("host", "check", "--json").stdout
    assert "container runtime" in check and "runc" in check and "crun" in check
