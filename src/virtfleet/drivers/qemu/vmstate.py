"""Guest RAM and device state to a file and back, by migration to a ``file:`` URI on a passed fd.

Owns ``save``: a live (pre-copy) migration into a file the caller opened, so the
guest runs while its RAM is copied and pauses only for the final round; at that
instant the caller's ``at_stop`` (e.g. a disk snapshot) runs, then the guest
continues. And ``load``: feed such a file to a QEMU started with
``-incoming defer``. QEMU runs unprivileged, so files go over as fds (``add-fd``).
Must not decide where state files live.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from qemu.qmp import QMPError as QMPLibError

from virtfleet.drivers.qemu.qmp import QMPSession
from virtfleet.errors import DriverError, TimeoutError_

POLL_S = 0.002  # the guest stays paused between completion and our cont: poll finely
UNLIMITED = 64 * 2**30  # bytes/s: a local file needs no throttle (default is 128 MiB/s)


async def _run(qmp: QMPSession, cmd: str, args: dict[str, Any] | None = None) -> Any:
    return await qmp._execute(cmd, args)  # the session's translated executor


async def _pass_fd(qmp: QMPSession, fd: int) -> int:
    """Put ``fd`` in a new fdset (QMP ``add-fd``); the migration opens ``/dev/fdset/<id>``."""
    async with qmp._fd_lock:
        try:
            qmp._client.send_fd_scm(fd)
        except (OSError, QMPLibError) as err:
            raise DriverError(f"passing the state file to QEMU failed: {err}") from err
        reply = await _run(qmp, "add-fd")
    return int(reply["fdset-id"])


async def _until(qmp: QMPSession, timeout_s: float) -> dict[str, Any]:
    """Poll ``query-migrate`` until completed; raise on failure or timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        info: dict[str, Any] = await _run(qmp, "query-migrate")
        status = info.get("status")
        if status == "completed":
            return info
        if status in ("failed", "cancelled"):
            raise DriverError(f"saving/loading VM state {status}: {info.get('error-desc', '')}")
        await asyncio.sleep(POLL_S)
    raise TimeoutError_(f"VM state transfer did not finish within {timeout_s:g}s")


async def save(
    qmp: QMPSession, fd: int, at_stop: Callable[[], Awaitable[None]], timeout_s: float = 300
) -> float:
    """Write RAM + device state into ``fd``; run ``at_stop`` while the guest is paused at the
    end; resume the guest. Returns the guest's pause in milliseconds (downtime + our part)."""
    params = {"max-bandwidth": UNLIMITED, "downtime-limit": 20}
    await _run(qmp, "migrate-set-parameters", params)
    fdset = await _pass_fd(qmp, fd)
    await _run(qmp, "migrate", {"uri": f"file:/dev/fdset/{fdset}"})
    try:
        info = await _until(qmp, timeout_s)
    except BaseException:
        await _run(qmp, "migrate_cancel")
        if await _status(qmp) in ("postmigrate", "paused", "finish-migrate"):
            await _run(qmp, "cont")
        raise
    seen = time.monotonic()
    try:
        await at_stop()
    finally:
        await _run(qmp, "cont")
        await _run(qmp, "remove-fd", {"fdset-id": fdset})
    ours = (time.monotonic() - seen) * 1000 + POLL_S * 500  # half a poll, on average
    return float(info.get("downtime", 0)) + ours


async def _status(qmp: QMPSession) -> str:
    return str((await _run(qmp, "query-status")).get("status", ""))


async def load(qmp: QMPSession, fd: int, timeout_s: float = 300) -> None:
    """Load state from ``fd`` into a QEMU waiting with ``-incoming defer``; it then runs."""
    fdset = await _pass_fd(qmp, fd)
    await _run(qmp, "migrate-incoming", {"uri": f"file:/dev/fdset/{fdset}"})
    deadline = time.monotonic() + timeout_s
    while (status := await _status(qmp)) != "running":
        if status in ("shutdown", "internal-error") or time.monotonic() > deadline:
            raise DriverError(f"loading VM state failed (VM is {status})")
        await asyncio.sleep(0.02)
    await _run(qmp, "remove-fd", {"fdset-id": fdset})
