"""Guest RAM and device state to a file and back, by migration to a ``file:`` URI on a passed fd.

Owns ``save``: a live (pre-copy) migration into a file the caller opened, so the
guest runs while its RAM is copied and pauses only for the final round; at that
instant the caller's ``at_stop`` (e.g. a disk snapshot) runs, then the guest
continues. And ``load``: feed such a file to a QEMU started with
``-incoming defer``. QEMU runs unprivileged, so files go over as fds (``add-fd``).
Must not decide where state files live.

The pause: QEMU ends every migration by inactivating the block nodes (flushing
their caches, storing persistent dirty bitmaps) and ``cont`` reactivates them (reopening
every qcow2 layer). Two costs grew with the host's state and were removed at their cause
(traced with QEMU's trace events and ``strace``, docs/benchmarks.md): on activation
QEMU's file driver dropped each image's host page cache (``posix_fadvise(DONTNEED)``,
46 ms for a just-backed-up 1 GiB disk, then cold metadata reads of every layer): the
file nodes are opened with ``drop-cache`` off (config.file_node); and every layer kept
the backups' persistent bitmaps, stored and reloaded with fdatasyncs in each pause:
vmsnap.py removes them from frozen layers. The filesystem is flushed first
(``syncfs``): syncs in the pause otherwise queue behind writeback of whatever the host
left dirty. The end is noticed from QEMU's ``MIGRATION`` event (capability ``events``),
not by polling, and the pause returned is the one QEMU stamped on its ``STOP`` and
``RESUME`` events.
"""

from __future__ import annotations

import asyncio
import ctypes
import time
from collections.abc import Awaitable, Callable
from typing import Any

from virtfleet.drivers.qemu.qmp import QMPEvent, QMPSession
from virtfleet.errors import DriverError, TimeoutError_

UNLIMITED = 64 * 2**30  # bytes/s: a local file needs no throttle (default is 128 MiB/s)
CAPABILITIES = [{"capability": "events", "state": True}]  # MIGRATION events
EVENT_WAIT_S = 5.0  # QEMU sends STOP/RESUME before the reply of the command that caused them


async def _run(qmp: QMPSession, cmd: str, args: dict[str, Any] | None = None) -> Any:
    return await qmp.execute(cmd, args)


def _flush_filesystem(fd: int) -> None:
    """``syncfs(2)`` on the filesystem holding ``fd``; best effort (a failure only costs time)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syncfs(fd)


class _Watch:
    """STOP, RESUME and MIGRATION events from the moment it is made, on a cursor of its
    own: other users of the session issuing commands cannot make it miss one."""

    NAMES = frozenset({"STOP", "RESUME", "MIGRATION"})

    def __init__(self, qmp: QMPSession) -> None:
        self.seen: list[QMPEvent] = []
        self.ended = False
        self._new = asyncio.Event()
        self._task = asyncio.create_task(self._collect(qmp, qmp.event_seq))

    async def _collect(self, qmp: QMPSession, since: int) -> None:
        async for event in qmp.events(since):
            if event.name in self.NAMES:
                self.seen.append(event)
                self._new.set()
        self.ended = True
        self._new.set()

    def find(self, name: str, statuses: tuple[str, ...] = ()) -> QMPEvent | None:
        """The first event ``name`` seen (for MIGRATION: with one of ``statuses``)."""
        for event in self.seen:
            if event.name == name and (not statuses or event.data.get("status") in statuses):
                return event
        return None

    async def wait(self, name: str, timeout_s: float, statuses: tuple[str, ...] = ()) -> QMPEvent:
        what = f"{name} {'/'.join(statuses)}".strip()
        try:
            async with asyncio.timeout(timeout_s):
                while (found := self.find(name, statuses)) is None:
                    if self.ended:
                        raise DriverError(f"QEMU monitor went away while waiting for {what}")
                    self._new.clear()
                    await self._new.wait()
        except TimeoutError as err:
            raise TimeoutError_(f"no QMP event {what} within {timeout_s:g}s") from err
        return found

    def close(self) -> None:
        self._task.cancel()


async def save(
    qmp: QMPSession,
    fd: int,
    at_stop: Callable[[], Awaitable[None]],
    timeout_s: float = 300,
) -> float | None:
    """Write RAM + device state into ``fd``; run ``at_stop`` while the guest is paused at the
    end; resume the guest. Returns the guest's pause in ms from QEMU's STOP and RESUME event
    timestamps (None if the guest was not running, so there was no STOP)."""
    await asyncio.to_thread(_flush_filesystem, fd)
    await _run(qmp, "migrate-set-capabilities", {"capabilities": CAPABILITIES})
    params = {"max-bandwidth": UNLIMITED, "downtime-limit": 20}
    await _run(qmp, "migrate-set-parameters", params)
    async with qmp.passed_fd(fd) as filename:
        watch = _Watch(qmp)
        try:
            await _run(qmp, "migrate", {"uri": f"file:{filename}"})
            await _finish(qmp, watch, at_stop, timeout_s)
            return await _pause_ms(watch)
        finally:
            watch.close()


async def _finish(
    qmp: QMPSession, watch: _Watch, at_stop: Callable[[], Awaitable[None]], timeout_s: float
) -> None:
    """Wait for the save to complete (the guest is then paused), run ``at_stop``, ``cont``."""
    try:
        done = await watch.wait("MIGRATION", timeout_s, ("completed", "failed", "cancelled"))
        if done.data.get("status") != "completed":
            info = await _run(qmp, "query-migrate")
            raise DriverError(f"saving VM state failed: {info.get('error-desc', '')}")
    except BaseException:
        await _abort(qmp)
        raise
    try:
        await at_stop()
    finally:
        await _settled(qmp)
        await _run(qmp, "cont")


async def _settled(qmp: QMPSession, timeout_s: float = EVENT_WAIT_S) -> None:
    """Until QEMU has left ``finish-migrate``: it sends the COMPLETED event just before it
    moves the VM to ``postmigrate``, and a ``cont`` in between would race that move."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await _status(qmp) != "finish-migrate":
            return
        await asyncio.sleep(0.001)


async def _abort(qmp: QMPSession) -> None:
    await _run(qmp, "migrate_cancel")
    if await _status(qmp) in ("postmigrate", "paused", "finish-migrate"):
        await _run(qmp, "cont")


async def _pause_ms(watch: _Watch) -> float | None:
    """STOP to RESUME as QEMU stamped them; never raises (the disks are switched by now)."""
    stop = watch.find("STOP")
    if stop is None:
        return None
    try:
        resume = await watch.wait("RESUME", EVENT_WAIT_S)
    except (DriverError, TimeoutError_):
        return None
    return (resume.timestamp - stop.timestamp) * 1000


async def _status(qmp: QMPSession) -> str:
    return str((await _run(qmp, "query-status")).get("status", ""))


async def load(qmp: QMPSession, fd: int, timeout_s: float = 300) -> None:
    """Load state from ``fd`` into a QEMU waiting with ``-incoming defer``; it then runs,
    or stays paused when the state was saved from a paused VM."""
    async with qmp.passed_fd(fd) as filename:
        await _run(qmp, "migrate-incoming", {"uri": f"file:{filename}"})
        deadline = time.monotonic() + timeout_s
        while (status := await _status(qmp)) == "inmigrate":
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.02)
        if status not in ("running", "paused"):
            raise DriverError(f"loading VM state failed (VM is {status})")
