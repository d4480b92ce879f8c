"""One contract suite for every Driver: the fake must behave like QEMU does.

The QEMU implementation boots the real tiny image under TCG (integration);
the fake runs everywhere. Both must honour the contract in drivers/base.py.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from virtfleet.drivers.base import Driver, DriverEvent, LaunchContext
from virtfleet.drivers.fake.driver import FakeDriver
from virtfleet.drivers.qemu.config import QemuOptions
from virtfleet.drivers.qemu.driver import QemuDriver
from virtfleet.errors import InvalidStateError
from virtfleet.model.instance import Accel, InstanceSpec, PowerState

CACHE = Path(os.environ.get("VIRTFLEET_CACHE_DIR", "/var/cache/virtfleet"))


class Harness:
    def __init__(
        self, driver: Driver, make_ctx: Callable[[str], LaunchContext], kind: str = "vm"
    ) -> None:
        self.driver = driver
        self.make_ctx = make_ctx
        self.kind = kind
        self._events = driver.events()

    def spec(self, name: str) -> InstanceSpec:
        return InstanceSpec(name=name, kind=self.kind, image="tiny", memory_mib=128).normalized()

    async def start(self, name: str) -> None:
        status = await self.driver.start(self.spec(name), self.make_ctx(name))
        assert status.power is PowerState.RUNNING

    async def next_event(self, name: str, kind: str) -> DriverEvent:
        async with asyncio.timeout(30):
            while True:
                event = await anext(self._events)
                if event.name == name and event.kind == kind:
                    return event


async def _fake() -> AsyncIterator[Harness]:
    """The fake's disks are real files too (the agent makes them): empty qcow2s here."""
    work = Path(tempfile.mkdtemp(prefix="vff", dir="/tmp"))

    def ctx(name: str) -> LaunchContext:
        disk = work / f"{name}.qcow2"
        if not disk.exists():
            cmd = ["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "16M"]
            subprocess.run(cmd, check=True)
        return LaunchContext(Accel.TCG, "test", {"root": disk})

    try:
        yield Harness(FakeDriver(), ctx)
    finally:
        shutil.rmtree(work, ignore_errors=True)


async def _qemu() -> AsyncIterator[Harness]:
    if os.geteuid() != 0 or shutil.which("qemu-system-x86_64") is None:
        pytest.skip("the QEMU driver needs root and qemu-system-x86_64")
    from virtfleet.storage.builders.tiny import build_tiny

    image = CACHE / "test-tiny.qcow2"
    await asyncio.to_thread(build_tiny, image, CACHE)
    work = Path(tempfile.mkdtemp(prefix="vfc", dir="/tmp"))

    def ctx(name: str) -> LaunchContext:
        disk = work / f"{name}.qcow2"
        if disk.exists():  # a second start of the same instance reuses its disk
            return LaunchContext(Accel.TCG, "test", {"root": disk}, hostname=name)
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(image), "-F", "qcow2", str(disk)],
            check=True,
        )
        return LaunchContext(Accel.TCG, "test", {"root": disk}, hostname=name)

    driver = QemuDriver(work / "run", "test", QemuOptions())
    try:
        yield Harness(driver, ctx)
    finally:
        for name in await driver.list():
            await driver.delete(name)
        await driver.close()
        shutil.rmtree(work, ignore_errors=True)


async def _oci() -> AsyncIterator[Harness]:
    if os.geteuid() != 0:
        pytest.skip("the OCI driver needs root")
    from tests.integration.oci import make_oci_driver, release

    work = Path(tempfile.mkdtemp(prefix="vfo", dir="/tmp"))
    driver = await make_oci_driver(work, CACHE)
    try:
        yield Harness(driver, lambda name: LaunchContext(Accel.AUTO, "test", {}), "container")
    finally:
        for name in await driver.list():
            await driver.delete(name)
        await driver.close()
        driver.remove_cgroup_parent()
        release(work)  # stopped containers keep their rootfs mounted


_HARNESSES = {"fake": _fake, "qemu": _qemu, "oci": _oci}


@pytest.fixture(
    params=[
        "fake",
        pytest.param("qemu", marks=pytest.mark.integration),
        pytest.param("oci", marks=pytest.mark.integration),
    ]
)
async def h(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    gen = _HARNESSES[request.param]()
    harness = await anext(gen)
    yield harness
    await gen.aclose()


async def test_start_pause_resume_stop(h: Harness) -> None:
    """A started instance is running, pauses, resumes, and a stop reports 'stopped'."""
    await h.start("c1")
    await h.driver.pause("c1")
    assert (await h.driver.status("c1")).power is PowerState.PAUSED
    await h.driver.resume("c1")
    assert (await h.driver.status("c1")).power is PowerState.RUNNING
    assert await h.driver.list() == ["c1"]
    await h.driver.stop("c1", force=True)
    await h.next_event("c1", "stopped")
    assert (await h.driver.status("c1")).power is PowerState.STOPPED


async def test_wrong_state_calls_raise(h: Harness) -> None:
    """Pausing a stopped instance or starting a running one raises InvalidStateError."""
    with pytest.raises(InvalidStateError):
        await h.driver.pause("nobody")
    await h.start("c2")
    with pytest.raises(InvalidStateError):
        await h.start("c2")
    with pytest.raises(InvalidStateError):
        await h.driver.resume("c2")


async def test_stop_and_delete_are_idempotent(h: Harness) -> None:
    """Stopping or deleting an unknown or stopped instance succeeds and changes nothing."""
    await h.driver.stop("ghost")
    await h.driver.delete("ghost")
    await h.start("c3")
    await h.driver.delete("c3")
    await h.driver.delete("c3")
    assert await h.driver.list() == []


async def test_adopt_unknown_is_stopped(h: Harness) -> None:
    """Adopting an instance with no process reports it stopped and starts nothing."""
    assert (await h.driver.adopt("never")).power is PowerState.STOPPED
    assert await h.driver.list() == []
