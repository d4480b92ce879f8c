"""``QMPSession.passed_fd``, the one way an fd goes into QEMU, against the fake QMP server:
an fdset is removed however the block ends, a named fd is closed when the block fails (and
left to the command that took it when it succeeds), a failed cleanup never hides the
block's own error, and the callers (vmstate, block jobs) get these guarantees too."""

from __future__ import annotations

import asyncio
import itertools
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.protocol.fake_qmp import FakeQMPServer, Reply, ScriptEntry, error, ok
from tests.protocol.sessions import session_with_file
from virtfleet.drivers.qemu import vmstate
from virtfleet.drivers.qemu.blockjobs import NBD_FD, BlockJobs
from virtfleet.drivers.qemu.qmp import QMPSession
from virtfleet.errors import QMPConnectionError, QMPError

pytestmark = pytest.mark.timeout(30)


class Fds:
    """QEMU's fd registry: fdsets (``add-fd``, ``remove-fd``) and named fds (``getfd``)."""

    def __init__(self) -> None:
        self.sets: set[int] = set()
        self.named: set[str] = set()
        self.ids = itertools.count(3)

    def script(self) -> dict[str, ScriptEntry]:
        return {
            "add-fd": self.add,
            "remove-fd": self.remove,
            "getfd": lambda a: self.named.add(a["fdname"]) or ok(),
            "closefd": self.close,
        }

    def add(self, _args: dict[str, Any]) -> Reply:
        fdset = next(self.ids)
        self.sets.add(fdset)
        return ok({"fdset-id": fdset, "fd": 40 + fdset})

    def remove(self, args: dict[str, Any]) -> Reply:
        if args["fdset-id"] not in self.sets:
            return error(f"File descriptor named '{args['fdset-id']}' not found")
        self.sets.discard(args["fdset-id"])
        return ok()

    def close(self, args: dict[str, Any]) -> Reply:
        if args["fdname"] not in self.named:
            return error(f"File descriptor named '{args['fdname']}' not found")
        self.named.discard(args["fdname"])
        return ok()


@asynccontextmanager
async def connected(
    sock_dir: Path, fds: Fds, extra: dict[str, ScriptEntry] | None = None
) -> AsyncIterator[tuple[FakeQMPServer, QMPSession, int]]:
    async with session_with_file(sock_dir, {**fds.script(), **(extra or {})}) as connection:
        yield connection


async def test_an_fdset_is_named_to_the_block_and_removed_after_it(sock_dir: Path) -> None:
    fds = Fds()
    async with connected(sock_dir, fds) as (fake, session, fd):
        async with session.passed_fd(fd) as filename:
            assert fds.sets == {3}
            await session.execute("screendump", {"filename": filename})
        dumped = next(m for m in fake.received if m.get("execute") == "screendump")
        assert dumped["arguments"]["filename"] == "/dev/fdset/3"
        assert fake.commands()[-1] == "remove-fd"
    assert fds.sets == set()


async def test_an_fdset_is_removed_when_the_block_fails(sock_dir: Path) -> None:
    fds = Fds()
    extra: dict[str, ScriptEntry] = {"blockdev-add": error("Could not open '/dev/fdset/3'")}
    async with connected(sock_dir, fds, extra) as (_fake, session, fd):
        with pytest.raises(QMPError, match="Could not open"):
            async with session.passed_fd(fd) as filename:
                await session.execute("blockdev-add", {"filename": filename})
    assert fds.sets == set()


async def test_a_failing_removal_does_not_hide_the_blocks_error(sock_dir: Path) -> None:
    fds = Fds()
    extra: dict[str, ScriptEntry] = {
        "remove-fd": error("remove failed"),
        "blockdev-add": error("Could not open '/dev/fdset/3'"),
    }
    async with connected(sock_dir, fds, extra) as (fake, session, fd):
        with pytest.raises(QMPError, match="Could not open"):
            async with session.passed_fd(fd) as filename:
                await session.execute("blockdev-add", {"filename": filename})
        assert "remove-fd" in fake.commands()
        assert await session.query_status() == "running"  # the session is still usable


async def test_a_named_fd_is_closed_only_when_the_block_fails(sock_dir: Path) -> None:
    fds = Fds()
    async with connected(sock_dir, fds) as (fake, session, fd):
        with pytest.raises(RuntimeError):
            async with session.passed_fd(fd, "vf-x") as name:
                assert fds.named == {"vf-x"}
                raise RuntimeError(name)
        assert fds.named == set()
        async with session.passed_fd(fd, "vf-y"):
            pass  # success: the command that used it took it over
        assert fds.named == {"vf-y"}
        assert fake.commands().count("closefd") == 1


async def test_a_refused_fd_leaves_nothing_to_clean(sock_dir: Path) -> None:
    fds = Fds()
    async with connected(sock_dir, fds, {"add-fd": error("fdset 3 is in use")}) as (fake, s, fd):
        with pytest.raises(QMPError, match="fdset 3 is in use"):
            async with s.passed_fd(fd):
                raise AssertionError("the block must not run")
        assert "remove-fd" not in fake.commands()


async def test_passing_on_a_closed_session_raises_a_connection_error(sock_dir: Path) -> None:
    fds = Fds()
    async with connected(sock_dir, fds) as (fake, session, fd):
        await session.close()
        with pytest.raises(QMPConnectionError):
            async with session.passed_fd(fd):
                raise AssertionError("the block must not run")
        assert "add-fd" not in fake.commands()


async def test_a_failed_state_load_removes_its_fdset(sock_dir: Path) -> None:
    fds = Fds()
    extra: dict[str, ScriptEntry] = {"migrate-incoming": error("Device needs migration")}
    async with connected(sock_dir, fds, extra) as (_fake, session, fd):
        with pytest.raises(QMPError, match="Device needs migration"):
            await vmstate.load(session, fd)
    assert fds.sets == set()


async def test_a_state_saved_from_a_paused_vm_loads_paused(sock_dir: Path) -> None:
    """QEMU leaves ``inmigrate`` for ``paused`` (not ``running``): the load is done then."""
    fds = Fds()
    async with connected(sock_dir, fds, {"migrate-incoming": ok()}) as (fake, session, fd):
        fake.status = "paused"
        await asyncio.wait_for(vmstate.load(session, fd), 10)
    assert fds.sets == set()


async def test_a_failed_nbd_start_closes_the_passed_socket(sock_dir: Path) -> None:
    fds = Fds()
    extra: dict[str, ScriptEntry] = {"nbd-server-start": error("NBD server already running")}
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        async with connected(sock_dir, fds, extra) as (fake, session, _fd):
            with pytest.raises(QMPError, match="already running"):
                await BlockJobs(session).serve_nbd(listener)
            closed = next(m for m in fake.received if m.get("execute") == "closefd")
        assert closed["arguments"] == {"fdname": NBD_FD}
        assert fds.named == set()
    finally:
        listener.close()
