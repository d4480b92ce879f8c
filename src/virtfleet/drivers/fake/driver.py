"""``FakeDriver``: an in-memory driver for the layers above (service, API, UI tests).

It keeps no processes, only per-instance power state, and must pass the same
contract suite as the real drivers (tests/contract/test_driver.py). Tests can
simulate a crash with ``crash(name)``, a guest poweroff with ``guest_poweroff`` and an
application's exit with ``app_exit(name, code)``.
"""

from __future__ import annotations

import asyncio
import itertools
import struct
import zlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

from virtfleet.drivers.base import DriverEvent, DriverInfo, EventKind, LaunchContext
from virtfleet.drivers.fake.live import FakeLive
from virtfleet.drivers.fake.vmsnap import FakeVmSnapshots
from virtfleet.drivers.stats import DriverStats
from virtfleet.errors import InvalidInputError, InvalidStateError
from virtfleet.model.instance import InstanceSpec, InstanceStatus, PowerState
from virtfleet.model.metrics import DiskIO

_pids = itertools.count(100000)


class FakeDriver(FakeLive, FakeVmSnapshots):
    name = "fake"

    def __init__(self, start_delay_s: float = 0.0) -> None:
        self.start_delay_s = start_delay_s
        self._vms: dict[str, InstanceStatus] = {}
        self._events: asyncio.Queue[DriverEvent] = asyncio.Queue()
        self.fail_next_start: str | None = None  # a message to fail the next start with

    def info(self) -> DriverInfo:
        return DriverInfo(self.name, True, "in-memory fake for tests")

    def validate(self, spec: InstanceSpec) -> None:
        if spec.kind == "vm" and not spec.disks and not spec.boot.kernel:
            raise InvalidInputError(f"instance {spec.name!r} has no disk and no kernel to boot")

    async def start(self, spec: InstanceSpec, ctx: LaunchContext) -> InstanceStatus:
        if spec.name in self._vms:
            raise InvalidStateError(self._vms[spec.name].power.value, "stopped")
        self.validate(spec)
        if self.start_delay_s:
            await asyncio.sleep(self.start_delay_s)
        if self.fail_next_start:
            message, self.fail_next_start = self.fail_next_start, None
            from virtfleet.errors import ProcessError

            raise ProcessError(message)
        status = InstanceStatus(
            power=PowerState.RUNNING,
            pid=next(_pids),
            accel=ctx.accel,
            accel_reason=ctx.accel_reason,
            qemu_version="fake",
            started_at=datetime.now(UTC),
        )
        self._vms[spec.name] = status
        self._launched(spec.name, ctx.disks)
        return status

    async def stop(self, name: str, *, force: bool = False, timeout_s: float = 30.0) -> None:
        if self._vms.pop(name, None) is not None:
            self._emit(name, "stopped", "stopped by request", requested=True)

    async def pause(self, name: str) -> None:
        self._set(name, PowerState.RUNNING, PowerState.PAUSED, "paused")

    async def resume(self, name: str) -> None:
        self._set(name, PowerState.PAUSED, PowerState.RUNNING, "running")

    async def reset(self, name: str) -> None:
        if name not in self._vms:
            raise InvalidStateError("stopped", ["running", "paused"])
        self._emit(name, "reset", "reset")

    def _set(self, name: str, need: PowerState, new: PowerState, kind: EventKind) -> None:
        status = self._vms.get(name)
        current = status.power if status else PowerState.STOPPED
        if status is None or current is not need:
            raise InvalidStateError(current.value, need.value)
        self._vms[name] = status.model_copy(update={"power": new})
        self._emit(name, kind, kind)

    async def delete(self, name: str) -> None:
        await self.stop(name, force=True)

    async def status(self, name: str) -> InstanceStatus:
        return self._vms.get(name, InstanceStatus(power=PowerState.STOPPED))

    async def adopt(self, name: str) -> InstanceStatus:
        return await self.status(name)

    async def list(self) -> list[str]:
        return sorted(self._vms)

    async def events(self) -> AsyncIterator[DriverEvent]:
        while True:
            yield await self._events.get()

    def console_socket(self, name: str) -> Path | None:
        return None

    def console_log(self, name: str) -> Path | None:
        return None

    def vnc_socket(self, name: str) -> Path | None:
        return None

    async def screenshot(self, name: str) -> bytes:
        """A small two-tone PNG for a running or paused instance (no real screen)."""
        if name not in self._vms:
            raise InvalidStateError("stopped", ["running", "paused"])
        return _png(8, 6)

    async def stats(self, name: str) -> DriverStats:
        """Synthetic counters growing with uptime, so the layers above see moving numbers."""
        status = self._vms.get(name)
        if status is None:
            raise InvalidStateError("stopped", ["running", "paused"])
        started = status.started_at or datetime.now(UTC)
        up = max(0.0, (datetime.now(UTC) - started).total_seconds())
        disk = DiskIO(
            read_bytes_total=int(up * 4096),
            write_bytes_total=int(up * 8192),
            read_ops_total=int(up),
            write_ops_total=int(up * 2),
        )
        return DriverStats(
            disks={"root": disk},
            balloon_actual_bytes=256 * 1024 * 1024,
            unavailable={"net": "the fake driver has no NICs"},
        )

    async def close(self) -> None:
        return None

    def crash(self, name: str, reason: str = "simulated crash") -> None:
        """Test hook: the instance's process died unexpectedly."""
        if self._vms.pop(name, None) is not None:
            self._emit(name, "crashed", reason)

    def guest_poweroff(self, name: str) -> None:
        """Test hook: the guest powered itself off."""
        if self._vms.pop(name, None) is not None:
            self._emit(name, "stopped", "guest-shutdown")

    def app_exit(self, name: str, code: int) -> None:
        """Test hook: an application container's command exited with ``code``."""
        if self._vms.pop(name, None) is not None:
            kind: EventKind = "stopped" if code == 0 else "crashed"
            reason = f"application exited with code {code}"
            self._events.put_nowait(DriverEvent(name, kind, reason, exit_code=code))

    def _emit(self, name: str, kind: EventKind, reason: str, requested: bool = False) -> None:
        self._events.put_nowait(DriverEvent(name, kind, reason, requested))


def _png(width: int, height: int) -> bytes:
    """An RGB PNG, top half white, bottom half black (PNG spec, sections 5 and 11)."""
    rows = [b"\x00" + (b"\xff" if y < height // 2 else b"\x00") * 3 * width for y in range(height)]
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + b"".join(
        _chunk(kind, data)
        for kind, data in (
            (b"IHDR", header),
            (b"IDAT", zlib.compress(b"".join(rows))),
            (b"IEND", b""),
        )
    )


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
