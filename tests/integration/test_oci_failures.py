"""The OCI driver when the runtime fails after handing the console over (the init cannot
be executed): the start raises the runtime's error and leaves nothing behind, neither
the console master the keeper was already given nor mount, cgroups or runtime state. And
when it works: the pty master it keeps is not inherited by the daemon's other children."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from virtfleet.drivers.base import LaunchContext
from virtfleet.drivers.oci.driver import OciDriver, cgroup_mounts
from virtfleet.errors import ProcessError
from virtfleet.model.instance import Accel, InstanceSpec

from .oci import make_oci_driver

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
        await drv.close()
        drv.remove_cgroup_parent()
        shutil.rmtree(work, ignore_errors=True)


def _hide_init(drv: OciDriver, name: str) -> None:
    """An overlay whiteout over /sbin/init in the container's upper layer."""
    shift = drv.cfg.userns.host_id if drv.cfg.userns else 0
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
