"""The in-process platform the functional and CLI tests drive through the public API.

``build_services`` wires the real services over a ``MemoryStore``; ``TempAgent``
stands in for the host agent. TEMPORARY until host.agent lands: swap
``TempAgent`` for ``virtfleet.host.agent.Agent`` + ``virtfleet.drivers.fake.FakeDriver``
(or ``virtfleet.app.bootstrap.build_platform``) and delete it.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

from virtfleet.model.event import Event
from virtfleet.model.host import HostFacts
from virtfleet.model.instance import Accel, DesiredPower, InstanceStatus, PowerState
from virtfleet.service import Services
from virtfleet.service.events import EventService
from virtfleet.service.host import HostService
from virtfleet.service.images import ImageService
from virtfleet.service.instances import InstanceService
from virtfleet.service.operations import OperationRunner
from virtfleet.state.memory import MemoryStore
from virtfleet.state.repos import INSTANCES, EventLog, InstanceRecord, InstanceRepo
from virtfleet.state.repos import instance_name_of
from virtfleet.storage.images import Builder, ImageStore, Progress

FACTS = HostFacts(hostname="testhost", cpus=4, memory_mib=4096)


def fake_build(out: Path, cache_dir: Path, progress: Progress | None) -> None:
    """A stand-in image builder: a small empty qcow2 made with qemu-img."""
    if progress:
        progress(50, "making an empty qcow2")
    tmp = out.with_suffix(".tmp")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(tmp), "16M"], check=True)
    tmp.rename(out)


class DirConsole:
    """``ConsoleAccess`` over a directory: ``<dir>/<name>.sock`` and ``<dir>/<name>.log``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def socket_path(self, name: str) -> Path | None:
        path = self.root / f"{name}.sock"
        return path if path.exists() else None

    def log_path(self, name: str) -> Path | None:
        return self.root / f"{name}.log"


# TEMPORARY until host.agent lands: a minimal agent that carries out desired state.
@dataclass
class TempAgent:
    store: MemoryStore
    events: EventLog
    applied: list[tuple[str, str]] = field(default_factory=list)
    gates: dict[str, asyncio.Event] = field(default_factory=dict)
    failures: dict[str, tuple[str, str]] = field(default_factory=dict)
    _dirty: set[str] = field(default_factory=set)
    _tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)

    async def run(self) -> None:
        repo = InstanceRepo(self.store)
        rev = await self.store.revision()
        for rec in await repo.list():
            self._kick(rec.name)
        async for change in self.store.watch(INSTANCES, rev):
            name = instance_name_of(change.key)
            if name and change.key.endswith("/desired"):
                self._kick(name)

    def _kick(self, name: str) -> None:
        self._dirty.add(name)
        task = self._tasks.get(name)
        if task is None or task.done():
            self._tasks[name] = asyncio.create_task(self._reconcile(name))

    async def _reconcile(self, name: str) -> None:
        repo = InstanceRepo(self.store)
        while name in self._dirty:
            self._dirty.discard(name)
            rec = await repo.find(name)
            if rec is None or rec.desired.generation <= rec.status.observed_generation:
                continue
            gate = self.gates.get(name)
            if gate is not None:
                await gate.wait()
            await self._apply(repo, rec)

    async def _apply(self, repo: InstanceRepo, rec: InstanceRecord) -> None:
        desired, status = rec.desired, rec.status
        self.applied.append((rec.name, desired.power.value))
        failure = self.failures.pop(rec.name, None)
        if desired.power is DesiredPower.DELETED and failure is None:
            await repo.remove(rec.name)
            return
        power = _POWER.get(desired.power, status.power)
        new = status.model_copy(update={"observed_generation": desired.generation})
        if failure is not None:
            new.error_code, new.error_message = failure
        else:
            new.power, new.error_code, new.error_message = power, None, None
            new.accel = Accel.TCG if power is not PowerState.STOPPED else None
            await self.events.append(Event(kind=f"instance.{power.value}", target=rec.name))
        await repo.put_status(rec.name, InstanceStatus.model_validate(new.model_dump()))

    async def close(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)


_POWER = {
    DesiredPower.RUNNING: PowerState.RUNNING,
    DesiredPower.STOPPED: PowerState.STOPPED,
    DesiredPower.PAUSED: PowerState.PAUSED,
}


@dataclass
class Platform:
    store: MemoryStore
    services: Services
    agent: TempAgent
    runner: OperationRunner


def build_platform(
    tmp: Path, builders: dict[str, Callable[[], Builder]] | None = None
) -> Platform:
    """Real services over a fresh ``MemoryStore`` plus the temporary agent (not started)."""
    store = MemoryStore()
    log = EventLog(store)
    runner = OperationRunner(store, log)
    images = ImageStore(
        tmp / "images", store, tmp / "cache", builders=builders or {"tiny": lambda: fake_build}
    )
    services = Services(
        instances=InstanceService(store, images, FACTS, runner, log, wait_timeout_s=10),
        images=ImageService(images, store, runner, log),
        operations=runner,
        host=HostService(FACTS, lambda facts: [{"name": "kvm", "result": "warn"}]),
        events=EventService(log),
        console=DirConsole(tmp / "console"),
    )
    return Platform(store, services, TempAgent(store, log), runner)


@contextlib.asynccontextmanager
async def running(platform: Platform) -> AsyncIterator[Platform]:
    """Run the temporary agent for the duration of the block; close everything after."""
    task = asyncio.create_task(platform.agent.run())
    try:
        yield platform
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await platform.agent.close()
        await platform.runner.close()
        await platform.store.close()
