"""The in-process platform the functional and CLI tests drive through the public API.

The real composition root (``virtfleet.app.bootstrap.build_platform``) with a
``MemoryStore``, the real host agent and a ``FakeDriver`` subclass that adds
test hooks (a gate per instance on start, a record of driver calls, console
paths in a directory), plus a fast stand-in for the ``tiny`` image builder.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import uvicorn
from argon2 import PasswordHasher

from tests.threaded_server import in_thread
from virtfleet.api.auth import local_admin
from virtfleet.app.bootstrap import Platform, build_platform
from virtfleet.app.settings import Settings
from virtfleet.drivers.base import LaunchContext
from virtfleet.drivers.fake.driver import FakeDriver
from virtfleet.model.host import HostFacts, KvmProbe
from virtfleet.model.instance import InstanceSpec, InstanceStatus
from virtfleet.service.credentials import Passwords
from virtfleet.state.audit import AuditLog
from virtfleet.state.memory import MemoryStore
from virtfleet.storage.images import Progress

FACTS = HostFacts(
    hostname="testhost",
    cpus=4,
    memory_mib=4096,
    qemu_version="9.2.0",
    kvm=KvmProbe(device_present=False, usable=False, reason="no /dev/kvm"),
)


# argon2id at its cheapest: the tests check the flow, not the cost (the daemon's default).
FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


def fake_build(out: Path, cache_dir: Path, progress: Progress | None) -> None:
    """A stand-in image builder: a small empty qcow2 made with qemu-img."""
    if progress:
        progress(50, "making an empty qcow2")
    tmp = out.with_suffix(".tmp")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(tmp), "16M"], check=True)
    tmp.rename(out)


class TestDriver(FakeDriver):
    """``FakeDriver`` plus hooks: ``gates[name]`` holds a start back until set (``stop_gates``
    a stop, as a guest ignoring the power button does); ``calls``
    records (method, name); the serial console is ``<console_dir>/<name>.sock``/``.log``."""

    __test__ = False

    def __init__(self, console_dir: Path) -> None:
        super().__init__()
        self.console_dir = console_dir
        self.gates: dict[str, asyncio.Event] = {}
        self.stop_gates: dict[str, asyncio.Event] = {}
        self.calls: list[tuple[str, str]] = []

    async def start(self, spec: InstanceSpec, ctx: LaunchContext) -> InstanceStatus:
        self.calls.append(("start", spec.name))
        gate = self.gates.get(spec.name)
        if gate is not None:
            await gate.wait()
        return await super().start(spec, ctx)

    async def stop(self, name: str, *, force: bool = False, timeout_s: float = 30.0) -> None:
        self.calls.append(("stop", name))
        gate = self.stop_gates.get(name)
        if gate is not None:
            await gate.wait()
        await super().stop(name, force=force, timeout_s=timeout_s)

    async def pause(self, name: str) -> None:
        self.calls.append(("pause", name))
        await super().pause(name)

    async def resume(self, name: str) -> None:
        self.calls.append(("resume", name))
        await super().resume(name)

    def console_socket(self, name: str) -> Path | None:
        path = self.console_dir / f"{name}.sock"
        return path if path.exists() else None

    def console_log(self, name: str) -> Path | None:
        return self.console_dir / f"{name}.log"


def make_platform(
    tmp: Path, separate_audit: bool = True, store: str = "memory"
) -> tuple[Platform, TestDriver]:
    """The daemon's wiring over a ``MemoryStore`` (or the ``store`` setting, e.g. a test
    etcd's ``etcd+http://`` URL) and a ``TestDriver`` (nothing started).

    With ``separate_audit`` the audit log gets a ``MemoryStore`` of its own (the daemon
    keeps it under ``/audit/`` in the one store; tests/functional/test_audit.py checks that).
    """
    (tmp / "console").mkdir(exist_ok=True)
    settings = Settings(data_dir=tmp, cache_dir=tmp / "cache", store=store, driver="fake")
    # Generous overcommit (64 vCPUs, 16 GiB on the 4-CPU, 4 GiB fake host): tests that start
    # many instances are not about admission; tests/functional/test_resources.py sets its own.
    settings.cpu_overcommit, settings.memory_overcommit = 16.0, 4.0
    platform = build_platform(settings, facts=FACTS)
    driver = TestDriver(tmp / "console")
    platform.driver = platform.agent.driver = driver
    platform.services.images.store.add_builder("tiny", lambda: fake_build)
    platform.services.instances.wait_timeout_s = 10.0
    platform.services.auth.passwords = Passwords(FAST_HASHER)
    if separate_audit:  # so store.revision() counts platform state only ("nothing written")
        platform.services.audit.log = AuditLog(MemoryStore())
    return platform, driver


@contextlib.asynccontextmanager
async def running(platform: Platform) -> AsyncIterator[Platform]:
    """Start the agent (and recovery) for the block; stop everything after it."""
    await platform.start()
    try:
        yield platform
    finally:
        await platform.services.operations.close()
        await platform.stop()


@contextlib.contextmanager
def serve_uds(
    tmp: Path, local: bool = True, setup: Callable[[Platform], object] | None = None
) -> Iterator[Path]:
    """Serve the daemon's app with uvicorn on ``<tmp>/api.sock`` (the daemon's socket
    convention) in a thread of its own; the platform starts through the app's lifespan.
    Yields the data dir, for the CLI's ``--data-dir`` and ``websockets.unix_connect``.
    Without ``local`` the socket is served like a TCP listener: credentials needed.
    ``setup`` may change the platform before it serves."""
    platform, _ = make_platform(tmp)
    if setup is not None:
        setup(platform)
    config = uvicorn.Config(
        local_admin(platform.app) if local else platform.app,
        uds=str(platform.settings.api_socket),
        log_level="warning",
        lifespan="on",
    )
    server = uvicorn.Server(config)
    with in_thread(server, server.run, "uvicorn"):
        yield tmp
