"""QMPSession against a real qemu-system-x86_64 (TCG, no disks, paused at start)."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from virtfleet.drivers.qemu.qmp import QMPEvent, QMPSession

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

QEMU = shutil.which("qemu-system-x86_64")


@dataclass
class RealQemu:
    proc: subprocess.Popen[bytes]
    sock: Path
    workdir: Path

    def stderr_tail(self) -> str:
        return (self.workdir / "stderr").read_text(errors="replace")[-2000:]


@pytest.fixture
def qemu() -> Iterator[RealQemu]:
    if QEMU is None:
        pytest.skip("qemu-system-x86_64 is not installed")
    if os.geteuid() != 0:
        pytest.skip("real-QEMU tests run as root")
    workdir = Path(tempfile.mkdtemp(prefix="vfq-", dir="/tmp"))  # unix paths < 108 chars
    sock = workdir / "q.sock"
    argv = [QEMU, "-machine", "q35,accel=tcg", "-nodefaults", "-display", "none", "-m", "64"]
    argv += ["-S", "-qmp", f"unix:{sock},server=on,wait=off"]
    with (workdir / "stderr").open("wb") as stderr:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr)
    try:
        yield RealQemu(proc, sock, workdir)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)


async def collect(session: QMPSession) -> list[QMPEvent]:
    return [event async for event in session.events()]


async def test_qmp_session_against_real_qemu(qemu: RealQemu) -> None:
    """Connect, prelaunch -> cont -> running, stop emits STOP, quit ends the event stream."""
    log = qemu.workdir / "qmp.log"
    session = await QMPSession.connect(qemu.sock, timeout_s=10.0, log_path=log)
    try:
        assert (await session.query_version()).count(".") == 2
        assert await session.query_status() == "prelaunch", qemu.stderr_tail()
        await session.cont()
        assert await session.query_status() == "running"
        await session.stop()
        assert (await session.wait_event({"STOP"}, 5.0)).name == "STOP"
        assert await session.query_status() == "paused"
        stream = asyncio.create_task(collect(session))
        await session.quit()
        names = [event.name for event in await asyncio.wait_for(stream, 10.0)]
        assert names[:2] == ["RESUME", "STOP"], names
        assert not session.connected
        assert await asyncio.to_thread(qemu.proc.wait, 10) == 0, qemu.stderr_tail()
    finally:
        await session.close()
