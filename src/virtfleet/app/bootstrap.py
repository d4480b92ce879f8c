"""The composition root: the one place that picks and wires concrete classes.

``build_platform`` assembles store, driver, agent, services and the API for a
``Settings``; ``serve`` runs it as the daemon on the data directory's Unix
socket. Nothing imports this module except entry points (CLI, tests, bench).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from virtfleet.api.app import create_app
from virtfleet.app.settings import Settings
from virtfleet.drivers.base import Driver
from virtfleet.drivers.fake.driver import FakeDriver
from virtfleet.drivers.qemu.config import QemuOptions
from virtfleet.drivers.qemu.driver import QemuDriver
from virtfleet.host.agent import Agent, AgentConfig
from virtfleet.host.facts import host_check, probe_host
from virtfleet.model.host import HostFacts
from virtfleet.service import Services
from virtfleet.service.events import EventService
from virtfleet.service.host import HostService
from virtfleet.service.images import ImageService
from virtfleet.service.instances import InstanceService
from virtfleet.service.operations import OperationRunner
from virtfleet.state.memory import MemoryStore
from virtfleet.state.repos import EventLog
from virtfleet.state.sqlite import SQLiteStore
from virtfleet.state.store import StateStore
from virtfleet.storage.images import ImageStore
from virtfleet.util.cgroups import CgroupManager

log = logging.getLogger(__name__)


@dataclass
class Platform:
    settings: Settings
    store: StateStore
    driver: Driver
    agent: Agent
    services: Services
    app: FastAPI

    async def start(self) -> None:
        await self.services.operations.recover()
        await self.agent.start()

    async def stop(self) -> None:
        await self.services.operations.close()
        await self.agent.stop()
        await self.store.close()


def host_facts(settings: Settings) -> HostFacts:
    """Probe the host, reusing this boot's result: the KVM verdict costs a timeout."""
    cache = settings.data_dir / "host-facts.json"
    boot_id = _boot_id()
    try:
        cached = HostFacts.model_validate_json(cache.read_text())
        if cached.boot_id == boot_id and cached.qemu_path:
            return cached
    except (OSError, ValueError):
        pass
    facts = probe_host(settings.qemu_binary, settings.kvm_probe_timeout_s)
    facts.boot_id = boot_id
    with contextlib.suppress(OSError):
        cache.write_text(facts.model_dump_json(indent=1))
    return facts


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _driver(settings: Settings, facts: HostFacts) -> Driver:
    if settings.driver == "fake":
        return FakeDriver()
    runas = settings.runas if settings.runas and _user_exists(settings.runas) else None
    opts = QemuOptions(binary=settings.qemu_binary, runas=runas)
    return QemuDriver(settings.run_dir, facts.qemu_version or "unknown", opts)


def _user_exists(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
    except KeyError:
        log.warning("user %s missing: QEMU will keep running as root", name)
        return False
    return True


def build_platform(settings: Settings, facts: HostFacts | None = None) -> Platform:
    """Wire every component for ``settings`` (nothing is started yet)."""
    for path in (settings.data_dir, settings.images_dir, settings.disks_dir, settings.run_dir):
        path.mkdir(parents=True, exist_ok=True, mode=0o750)
    facts = facts or host_facts(settings)
    store: StateStore = (
        MemoryStore() if settings.store == "memory" else SQLiteStore(settings.store_path)
    )
    events = EventLog(store)
    images = ImageStore(settings.images_dir, store, settings.cache_dir)
    cgroups = CgroupManager(f"virtfleet-{settings.instance_id}") if os.geteuid() == 0 else None
    driver = _driver(settings, facts)
    agent = Agent(
        store,
        driver,
        facts,
        events,
        AgentConfig(
            disks_root=settings.disks_dir,
            image_path=images.file_for,
            cgroups=cgroups if cgroups is not None and cgroups.available else None,
        ),
    )
    runner = OperationRunner(store, events)
    services = Services(
        instances=InstanceService(store, images, facts, runner, events),
        images=ImageService(images, store, runner, events),
        operations=runner,
        host=HostService(facts, host_check),
        events=EventService(events),
        console=agent,
    )
    platform = Platform(settings, store, driver, agent, services, FastAPI())

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await platform.start()
        try:
            yield
        finally:
            await platform.stop()

    platform.app = create_app(services, lifespan=lifespan)
    return platform


def serve(settings: Settings) -> None:
    """Run the daemon in the foreground until SIGINT/SIGTERM; VMs keep running after it."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    platform = build_platform(settings)
    sock = settings.api_socket
    sock.unlink(missing_ok=True)
    config = uvicorn.Config(
        platform.app, uds=str(sock), log_level="warning", ws="websockets-sansio"
    )
    server = uvicorn.Server(config)
    log.info("virtfleet %s serving on %s", settings.data_dir, sock)
    asyncio.run(_serve(server, sock))


async def _serve(server: uvicorn.Server, sock: Path) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, lambda: setattr(server, "should_exit", True))
    try:
        await server.serve()
    finally:
        sock.unlink(missing_ok=True)
