"""Hot-adding a disk against the fake QMP server: the fd sets that carried the disk file and
its backing files into QEMU are removed once the node is open (and when the hot-add fails),
so none pile up in a long-running QEMU (``query-fdsets`` stays empty)."""

from __future__ import annotations

import itertools
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.protocol.fake_qmp import FakeQMPServer, Reply, error, ok
from virtfleet.drivers.qemu import live
from virtfleet.drivers.qemu.qmp import QMPSession
from virtfleet.errors import QMPError

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def work() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="vfq-", dir="/tmp"))  # unix socket path limit
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _overlay(work: Path) -> Path:
    """A qcow2 over a qcow2 base: two files, so two fd sets go into QEMU."""
    base, top = work / "base.qcow2", work / "data.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "1M"], check=True)
    cmd = ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "qcow2", str(top)]
    subprocess.run(cmd, check=True)
    return top


class FdSets:
    """QEMU's fd-set registry as ``add-fd`` / ``remove-fd`` / ``query-fdsets`` see it."""

    def __init__(self, device_add: Reply) -> None:
        self.sets: dict[int, int] = {}
        self.ids = itertools.count(1)
        self.device_add = device_add

    def script(self) -> dict[str, Any]:
        return {
            "add-fd": self.add,
            "remove-fd": self.remove,
            "query-fdsets": lambda _a: ok(
                [{"fdset-id": i, "fds": [{"fd": fd}]} for i, fd in self.sets.items()]
            ),
            "blockdev-add": ok(),
            "blockdev-del": ok(),
            "device_add": self.device_add,
        }

    def add(self, _args: dict[str, Any]) -> Reply:
        fdset = next(self.ids)
        self.sets[fdset] = 100 + fdset
        return ok({"fdset-id": fdset, "fd": self.sets[fdset]})

    def remove(self, args: dict[str, Any]) -> Reply:
        if self.sets.pop(args["fdset-id"], None) is None:
            return error(f"File descriptor named '{args['fdset-id']}' not found")
        return ok()


async def _hot_add(work: Path, fdsets: FdSets) -> tuple[FakeQMPServer, list[Any]]:
    top = _overlay(work)
    async with FakeQMPServer(work / "q.sock", fdsets.script()) as fake:
        session = await QMPSession.connect(fake.path, timeout_s=2.0)
        try:
            try:
                await live.add_disk(session, "data", top, "hotplug1")
            finally:
                left = await session.execute("query-fdsets")
        finally:
            await session.close()
    return fake, left


async def test_hot_added_disk_leaves_no_fd_set(work: Path) -> None:
    fake, left = await _hot_add(work, FdSets(ok()))
    commands = fake.commands()
    assert commands.count("add-fd") == 2  # the overlay and its base
    assert left == []
    # Removed only after QEMU opened the node: before that it needs them.
    assert commands.index("blockdev-add") < commands.index("remove-fd")


async def test_failed_hot_add_leaves_no_fd_set_nor_node(work: Path) -> None:
    fdsets = FdSets(error("Bus 'hotplug1' not found"))
    top = _overlay(work)
    async with FakeQMPServer(work / "q.sock", fdsets.script()) as fake:
        session = await QMPSession.connect(fake.path, timeout_s=2.0)
        try:
            with pytest.raises(QMPError):
                await live.add_disk(session, "data", top, "hotplug1")
        finally:
            await session.close()
    assert fdsets.sets == {}
    deleted = [m["arguments"] for m in fake.received if m.get("execute") == "blockdev-del"]
    assert deleted == [{"node-name": "disk-data"}]
