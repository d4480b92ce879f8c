"""The console keeper process (drivers/oci/keeper.py) with real ptys: it keeps a master
after the agent disconnects and hands a copy back, drops on request, exits once it keeps
nothing and nobody is connected, and a keeper killed under a live agent is replaced and
given every master again."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from virtfleet.drivers.oci.console import ConsoleKeeper


@pytest.fixture
def pty_pair() -> Iterator[tuple[int, int]]:
    master, slave = os.openpty()
    yield master, slave
    for fd in (master, slave):
        with contextlib.suppress(OSError):
            os.close(fd)


def _keeper_pid(path: Path) -> int | None:
    """The keeper listening on ``path`` (not SO_PEERCRED: the agent called listen())."""
    for proc in psutil.process_iter(["cmdline"]):
        if "keeper.py" in " ".join(proc.info["cmdline"] or []):
            with contextlib.suppress(psutil.Error):
                if any(c.laddr == str(path) for c in proc.net_connections(kind="unix")):
                    return int(proc.pid)
    return None


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


async def _until(cond: object, timeout_s: float = 10.0) -> None:
    for _ in range(int(timeout_s / 0.02)):
        if cond():  # type: ignore[operator]
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in time")


def _same_pty(master: int, slave: int) -> bool:
    os.write(slave, b"ping\n")
    return b"ping" in os.read(master, 100)


async def test_a_kept_master_outlives_its_agent_and_comes_back(
    tmp_path: Path, pty_pair: tuple[int, int]
) -> None:
    master, slave = pty_pair
    first = ConsoleKeeper(tmp_path / "k.sock", lambda: [])
    first.keep("c1", master)  # queued on the listener: the keeper may still be starting
    await _until(lambda: _keeper_pid(tmp_path / "k.sock") is not None)
    pid = _keeper_pid(tmp_path / "k.sock")
    assert pid is not None
    first.close()  # the agent goes; the keeper keeps c1's master
    os.close(master)
    await asyncio.sleep(0.1)
    assert _alive(pid)
    second = ConsoleKeeper(tmp_path / "k.sock", lambda: [])
    taken = second.take("c1")
    assert taken is not None and not os.get_inheritable(taken)
    try:
        assert _same_pty(taken, slave)
        assert second.take("other") is None
        second.drop("c1")
        assert second.take("c1") is None
    finally:
        os.close(taken)
    assert _keeper_pid(tmp_path / "k.sock") == pid  # the same keeper throughout
    second.close()  # nothing kept, nobody connected: it exits
    await _until(lambda: not _alive(pid))


async def test_a_killed_keeper_is_replaced_with_every_master(
    tmp_path: Path, pty_pair: tuple[int, int]
) -> None:
    master, slave = pty_pair
    keeper = ConsoleKeeper(tmp_path / "k.sock", lambda: [("c1", master)])
    keeper.keep("c1", master)  # queued on the listener: the keeper may still be starting
    await _until(lambda: _keeper_pid(tmp_path / "k.sock") is not None)
    pid = _keeper_pid(tmp_path / "k.sock")
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    await _until(lambda: not _alive(pid))
    await _until(lambda: _keeper_pid(tmp_path / "k.sock") not in (None, pid))
    taken = keeper.take("c1")
    assert taken is not None
    try:
        assert _same_pty(taken, slave)
    finally:
        os.close(taken)
        keeper.drop("c1")
        keeper.close()


async def test_keep_after_an_unnoticed_death_starts_a_new_keeper(
    tmp_path: Path, pty_pair: tuple[int, int]
) -> None:
    """Without a running loop nothing watches the keeper: the next keep finds it gone."""
    master, _ = pty_pair
    keeper = ConsoleKeeper(tmp_path / "k.sock", lambda: [])
    await asyncio.to_thread(keeper.keep, "c1", master)  # no loop in the thread: no watch
    await _until(lambda: _keeper_pid(tmp_path / "k.sock") is not None)  # may still be starting
    pid = _keeper_pid(tmp_path / "k.sock")
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    await _until(lambda: not _alive(pid))
    await asyncio.to_thread(keeper.keep, "c2", master)
    assert keeper.take("c2") is not None and keeper.take("c1") is None
    keeper.drop("c2")
    keeper.close()
