"""vmstate.save against the fake QMP server: the live save's end is taken from QEMU's
MIGRATION event, the caller's disk switch runs in the pause, the guest is resumed only after
QEMU has left ``finish-migrate``, and the pause reported is QEMU's STOP -> RESUME."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.protocol.fake_qmp import FakeQMPServer, Reply, ok
from tests.protocol.sessions import session_with_file
from virtfleet.drivers.qemu import vmstate
from virtfleet.drivers.qemu.qmp import QMPSession
from virtfleet.errors import DriverError

pytestmark = pytest.mark.timeout(30)


class Migration:
    """QEMU's side of a live save: after ``migrate`` the guest is stopped (STOP), the
    MIGRATION event says how it ended while the VM is still in ``finish-migrate``, and only
    a moment later QEMU moves the VM on (``postmigrate``, or back to running on failure)."""

    def __init__(self, outcome: str = "completed") -> None:
        self.outcome = outcome
        self.fake: FakeQMPServer | None = None
        self.status_at_cont = ""
        self._tasks: set[asyncio.Task[None]] = set()

    def script(self) -> dict[str, Any]:
        return {
            "migrate-set-capabilities": ok(),
            "migrate-set-parameters": ok(),
            "add-fd": ok({"fdset-id": 7, "fd": 42}),
            "remove-fd": ok(),
            "migrate_cancel": ok(),
            "migrate": self.migrate,
            "query-migrate": ok({"status": self.outcome, "error-desc": "No space left on device"}),
            "cont": self.cont,
        }

    def migrate(self, _args: dict[str, Any]) -> Reply:
        task = asyncio.create_task(self._run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return ok()

    async def _run(self) -> None:
        assert self.fake is not None
        await asyncio.sleep(0.02)
        await self.fake.emit("MIGRATION", {"status": "active"})
        self.fake.status = "finish-migrate"
        await self.fake.emit("STOP")
        await asyncio.sleep(0.005)
        await self.fake.emit("MIGRATION", {"status": self.outcome})
        await asyncio.sleep(0.02)
        self.fake.status = "postmigrate" if self.outcome == "completed" else "running"

    async def cont(self, _args: dict[str, Any]) -> Reply:
        assert self.fake is not None
        self.status_at_cont = self.fake.status
        return await self.fake._transition("running", "RESUME")


@contextlib.asynccontextmanager
async def serve(
    sock_dir: Path, migration: Migration
) -> AsyncIterator[tuple[FakeQMPServer, QMPSession, int]]:
    async with session_with_file(sock_dir, migration.script()) as (fake, session, fd):
        migration.fake = fake
        yield fake, session, fd


async def test_save_switches_in_the_pause_and_reports_qemus_pause(sock_dir: Path) -> None:
    migration = Migration()
    async with serve(sock_dir, migration) as (fake, session, fd):
        seen: list[str] = []

        async def switch() -> None:
            seen.append(fake.status)
            seen.append(",".join(fake.commands()))

        pause = await vmstate.save(session, fd, switch)
        events = {e.name: e.timestamp async for e in _until_resume(session)}
        commands = fake.commands()

    assert seen[0] in ("finish-migrate", "postmigrate")  # paused at the end of the save
    assert "cont" not in seen[1]
    assert migration.status_at_cont == "postmigrate"  # not racing QEMU's own move
    assert pause is not None
    assert pause == pytest.approx((events["RESUME"] - events["STOP"]) * 1000)
    assert "query-migrate" not in commands  # the end comes from the MIGRATION event
    caps = next(m for m in fake.received if m.get("execute") == "migrate-set-capabilities")
    assert caps["arguments"] == {"capabilities": [{"capability": "events", "state": True}]}
    assert commands.index("migrate") < commands.index("cont") < commands.index("remove-fd")


async def test_failed_save_raises_without_switching(sock_dir: Path) -> None:
    async with serve(sock_dir, Migration("failed")) as (fake, session, fd):
        switched: list[bool] = []

        async def switch() -> None:
            switched.append(True)

        with pytest.raises(DriverError, match="No space left on device"):
            await vmstate.save(session, fd, switch)
        assert not switched
        assert "migrate_cancel" in fake.commands()
        assert fake.commands()[-1] == "remove-fd"


async def test_failing_switch_still_resumes_the_guest(sock_dir: Path) -> None:
    migration = Migration()
    async with serve(sock_dir, migration) as (fake, session, fd):

        async def switch() -> None:
            raise RuntimeError("transaction failed")

        with pytest.raises(RuntimeError, match="transaction failed"):
            await vmstate.save(session, fd, switch)
        assert fake.status == "running"
        assert migration.status_at_cont == "postmigrate"


async def _until_resume(session: QMPSession) -> AsyncIterator[Any]:
    async for event in session.events():
        if event.name in ("STOP", "RESUME"):
            yield event
        if event.name == "RESUME":
            return
