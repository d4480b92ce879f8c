"""The OCI driver when the runtime fails after handing the console over (the init cannot
be executed): the start raises the runtime's error and leaves nothing behind, neither
the console master the keeper was already given nor mount, cgroups or runtime state. And
when it works: the pty master it keeps is not inherited by the daemon's other children,
and the rootfs stays mounted after a requested stop only."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import stat
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from virtfleet.drivers.base import LaunchContext
from virtfleet.drivers.oci import bundlefile, layers, runtime
from virtfleet.drivers.oci.bundle import BundleOptions
from virtfleet.drivers.oci.driver import OciDriver, cgroup_mounts
from virtfleet.drivers.oci.runtime import Command
from virtfleet.errors import ProcessError
from virtfleet.model.instance import Accel, InstanceSpec

from .oci import make_oci_driver, release

CACHE = Path(os.environ.get("VIRTFLEET_CACHE_DIR", "/var/cache/virtfleet"))


@pytest.fixture
async def driver() -> AsyncIterator[OciDriver]:
    if os.geteuid() != 0 or shutil.which("runc") is None:
        pytest.skip("container tests need root and runc")
    work = Path(tempfile.mkdtemp(prefix="vfo", dir="/tmp"))
    drv = await make_oci_driver(work, CACHE)
    try:
        yield drv
    finally:
        for name in await drv.list():  # what a failed test left running
            await drv.delete(name)
        await drv.close()
        drv.remove_cgroup_parent()
        release(work)


def _hide_init(drv: OciDriver, name: str) -> None:
    """An overlay whiteout over /sbin/init in the container's upper layer."""
    userns = drv.id_range(name)
    shift = userns.host_id if userns else 0
    layer = drv.layer_dir(name)
    sbin = layer / "upper" / "sbin"
    sbin.mkdir(parents=True)
    for path in (layer, layer / "upper", sbin):
        os.chown(path, shift, shift)
    os.mknod(sbin / "init", stat.S_IFCHR | 0o600, os.makedev(0, 0))


@pytest.mark.integration
async def test_runtime_failing_after_the_console_handover_leaves_nothing(
    driver: OciDriver, monkeypatch: pytest.MonkeyPatch
) -> None:
    kept: list[str] = []
    keep = driver.keeper.keep

    def keep_and_note(name: str, master: int) -> None:
        kept.append(name)
        keep(name, master)

    monkeypatch.setattr(driver.keeper, "keep", keep_and_note)
    _hide_init(driver, "broken")
    spec = InstanceSpec(name="broken", kind="container", image="tiny")
    with pytest.raises(ProcessError, match=r"^runc run failed: .*/sbin/init") as err:
        await driver.start(spec, LaunchContext(Accel.AUTO, "container", {}))
    assert err.value.message.count("failed:") == 1  # runc's own prefix is not repeated
    assert kept == ["broken"] and driver.keeper.take("broken") is None  # kept, then dropped
    paths = driver.paths("broken")
    assert not paths.record.exists() and not paths.console.exists()
    assert not os.path.ismount(paths.rootfs)
    assert not (driver.cfg.state_root / "broken").exists()
    assert [m for m in cgroup_mounts() if (m / driver.cfg.cgroup_parent / "broken").exists()] == []
    assert await driver.list() == [] and "broken" not in driver._live


@pytest.mark.integration
async def test_console_master_is_not_inheritable(driver: OciDriver) -> None:
    spec = InstanceSpec(name="ok", kind="container", image="tiny")
    await driver.start(spec, LaunchContext(Accel.AUTO, "container", {}))
    try:
        relay = driver._live["ok"].relay
        assert relay is not None and not os.get_inheritable(relay.master)
    finally:
        await driver.delete("ok")


def _mounted(target: Path) -> bool:
    return any(line.split()[4] == str(target) for line in _mountinfo())


def _mountinfo() -> list[str]:
    return Path("/proc/self/mountinfo").read_text().splitlines()


@pytest.mark.integration
async def test_the_rootfs_stays_mounted_only_after_a_requested_stop(
    driver: OciDriver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stop on request keeps the overlay for the next start (not mounted again, the
    files written before); a restore, a crash and delete unmount it."""
    mounts: list[Path] = []
    mount = layers.mount_overlay

    def mount_and_count(lower: Path, upper: Path, work: Path, target: Path) -> None:
        mounts.append(target)
        mount(lower, upper, work, target)

    monkeypatch.setattr(layers, "mount_overlay", mount_and_count)
    spec = InstanceSpec(name="kept", kind="container", image="tiny")
    ctx = LaunchContext(Accel.AUTO, "container", {})
    rootfs = driver.paths("kept").rootfs
    await driver.start(spec, ctx)
    assert (await driver.exec("kept", ["sh", "-c", "echo one > /mark"])).exit_code == 0
    await driver.stop("kept", force=True)
    assert _mounted(rootfs) and (rootfs / "mark").read_text() == "one\n"
    await driver.start(spec, ctx)
    assert mounts == [rootfs]  # not mounted again
    assert (await driver.exec("kept", ["cat", "/mark"])).stdout == "one\n"
    await driver.stop("kept")
    await driver.snapshot("kept", "s1")
    assert _mounted(rootfs)  # a snapshot only reads the layer
    await driver.restore("kept", "s1")
    assert not _mounted(rootfs)
    status = await driver.start(spec, ctx)
    assert _mounted(rootfs) and len(mounts) == 2 and status.pid is not None
    live = driver._live["kept"]
    os.kill(status.pid, signal.SIGKILL)  # a crash: the next start gets a fresh mount
    await asyncio.wait_for(live.gone.wait(), 30)  # set once its cleanup is done
    assert not _mounted(rootfs)
    await driver.start(spec, ctx)
    await driver.delete("kept")
    assert not _mounted(rootfs) and not driver.paths("kept").root.exists()


@pytest.mark.integration
async def test_the_inits_pid_comes_with_its_console(
    driver: OciDriver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """runc gets no --pid-file (it writes one with O_SYNC): the pid is the console's
    sender, checked to be a namespace's init; if it is not, the runtime's state says."""
    spawned: list[tuple[str, ...]] = []
    spawn = driver.runtime._spawn

    def spawn_and_note(*args: str) -> Command:
        spawned.append(args)
        return spawn(*args)

    monkeypatch.setattr(driver.runtime, "_spawn", spawn_and_note)
    spec = InstanceSpec(name="pid", kind="container", image="tiny")
    ctx = LaunchContext(Accel.AUTO, "container", {})
    for sender_is_init in (True, False):
        if not sender_is_init:  # e.g. a runc that sends the console from elsewhere
            monkeypatch.setattr(runtime, "is_namespace_init", lambda pid: False)
        spawned.clear()
        status = await driver.start(spec, ctx)
        assert [a[0] for a in spawned] == (["run"] if sender_is_init else ["run", "state"])
        assert "--pid-file" not in spawned[0]
        state = await driver.runtime.state("pid")
        assert state is not None and status.pid == state["pid"]
        assert _ns_pids(status.pid)[-1] == "1"
        await driver.stop("pid", force=True)
    assert not (driver.paths("pid").bundle / runtime.PID_FILE).exists()


def _ns_pids(pid: int) -> list[str]:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("NSpid:"):
            return line.split()[1:]
    return []


@pytest.mark.integration
async def test_close_leaves_no_empty_cgroup_parent(driver: OciDriver) -> None:
    """runc makes the parent in every hierarchy and never removes it: closing does,
    where no container is left; a running container keeps its parent."""
    spec = InstanceSpec(name="cg", kind="container", image="tiny")
    ctx = LaunchContext(Accel.AUTO, "container", {})
    await driver.start(spec, ctx)
    parent = driver.cfg.cgroup_parent
    await driver.close()
    assert [m for m in cgroup_mounts() if (m / parent / "cg").is_dir()] != []  # still runs
    await driver.delete("cg")
    assert [m for m in cgroup_mounts() if (m / parent).exists()] != []  # runc left them
    assert driver.cfg.mount_root.is_dir()  # "cg" was mounted there until its delete
    await driver.close()
    assert [m for m in cgroup_mounts() if (m / parent).exists()] == []
    assert not driver.cfg.mount_root.parent.exists()  # nothing of this driver left in /run


@pytest.mark.integration
async def test_a_rootfs_an_older_version_kept_in_the_data_dir_moves_out(
    driver: OciDriver,
) -> None:
    """Upgrade: a container stopped by a version that mounted its rootfs at
    ``<run>/<name>/rootfs`` (inside the data directory) and kept it mounted starts from
    the new mount point with its files, the old mount gone; delete unmounts an old mount
    before removing the run directory (never through the overlay)."""
    spec = InstanceSpec(name="old", kind="container", image="tiny")
    ctx = LaunchContext(Accel.AUTO, "container", {})
    paths = driver.paths("old")
    assert not paths.rootfs.is_relative_to(paths.root)
    await driver.start(spec, ctx)
    assert (await driver.exec("old", ["sh", "-c", "echo one > /mark"])).exit_code == 0
    await driver.stop("old", force=True)
    _mount_as_before(driver, "old")
    await driver.start(spec, ctx)
    assert not _mounted(paths.legacy_rootfs) and _mounted(paths.rootfs)
    assert (await driver.exec("old", ["cat", "/mark"])).stdout == "one\n"
    await driver.stop("old", force=True)
    _mount_as_before(driver, "old")
    await driver.delete("old")
    assert not _mounted(paths.legacy_rootfs) and not paths.root.exists()
    assert (driver.layer_dir("old") / "upper" / "mark").read_text() == "one\n"
    assert not paths.rootfs.exists()


def _mount_as_before(drv: OciDriver, name: str) -> None:
    """The container's overlay where an older version kept it: in its run directory."""
    paths = drv.paths(name)
    layers.unmount(paths.rootfs)
    drv._mounted.pop(name, None)  # as a new daemon would start
    userns = drv.id_range(name)
    shift = userns.host_id if userns else 0
    lower = layers.extracted(drv.cfg.rootfs_for("tiny"), drv.cfg.lower_root, shift)
    assert lower is not None
    upper, work = layers.prepare_layer(drv.layer_dir(name), shift)
    layers.mount_overlay(lower, upper, work, paths.legacy_rootfs)
    assert _mounted(paths.legacy_rootfs) and not _mounted(paths.rootfs)


@pytest.mark.integration
async def test_a_start_killed_mid_create_leaves_nothing_and_the_next_start_works(
    driver: OciDriver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A start cancelled while runc is inside ``run`` (held in a createRuntime hook) kills
    runc before it saved its state: runc's state directory must go with the rest, or runc
    refuses every later start ("container with given ID already exists")."""
    work = Path(tempfile.mkdtemp(prefix="vfh", dir="/tmp"))
    mark = work / "hook.pid"
    build = bundlefile.build_config

    def held_in_a_hook(spec: InstanceSpec, opts: BundleOptions) -> dict[str, Any]:
        config = build(spec, opts)
        hold = f"echo $$ > {mark}.tmp && mv {mark}.tmp {mark} && exec sleep 120"
        config["hooks"] = {"createRuntime": [{"path": "/bin/sh", "args": ["sh", "-c", hold]}]}
        return config

    monkeypatch.setattr(bundlefile, "build_config", held_in_a_hook)
    spec = InstanceSpec(name="held", kind="container", image="tiny")
    ctx = LaunchContext(Accel.AUTO, "container", {})
    starting = asyncio.create_task(driver.start(spec, ctx))
    try:
        while not mark.exists() and not starting.done():
            await asyncio.sleep(0.05)
        assert (driver.cfg.state_root / "held").is_dir()  # runc is inside its create
        starting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await starting
    finally:
        if mark.exists():
            os.kill(int(mark.read_text()), signal.SIGKILL)
        shutil.rmtree(work)
    assert not (driver.cfg.state_root / "held").exists()
    assert not _mounted(driver.paths("held").rootfs)
    assert [m for m in cgroup_mounts() if (m / driver.cfg.cgroup_parent / "held").exists()] == []
    monkeypatch.setattr(bundlefile, "build_config", build)
    driver.bundles.forget("held")  # the held config.json is rewritten
    status = await driver.start(spec, ctx)
    assert status.pid is not None
    assert (await driver.exec("held", ["echo", "up"])).stdout == "up\n"
    await driver.delete("held")
