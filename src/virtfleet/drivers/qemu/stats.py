"""Counters of one VM read over its QMP session: block I/O, balloon, guest memory, NICs.

Owns the QMP commands the metrics collector needs (``query-blockstats``,
``query-balloon``, ``qom-get``/``qom-set`` of the balloon's ``guest-stats``; QMP
reference, sections "Block devices" and "Machines") and naming their results.
Wrappers live here, not in ``qmp.py``, which stays the session's core vocabulary.
Must not keep state between calls beyond what the caller passes in.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Sequence
from typing import Any

from virtfleet.drivers.qemu.qmp import QMPSession
from virtfleet.drivers.stats import DriverStats
from virtfleet.errors import QMPError
from virtfleet.model.metrics import DiskIO

BALLOON_PATH = "/machine/peripheral/balloon0"  # id set by drivers/qemu/config.py
GUEST_STATS_POLL_S = 10  # the guest driver refreshes its statistics this often
_GUEST_STATS = {
    "stat-total-memory": "total_bytes",
    "stat-free-memory": "free_bytes",
    "stat-available-memory": "available_bytes",
    "stat-disk-caches": "cache_bytes",
    "stat-swap-in": "swap_in_bytes",
    "stat-swap-out": "swap_out_bytes",
    "stat-major-faults": "major_faults",
}


async def collect(qmp: QMPSession, argv: Sequence[str], polling: bool) -> DriverStats:
    """Everything QMP tells about the VM; ``polling``: guest stats polling is already on."""
    out = DriverStats()
    try:
        out.disks = await block_stats(qmp)
    except QMPError as err:
        out.unavailable["disks"] = f"query-blockstats failed: {err.message}"
    await _balloon(qmp, out, polling)
    out.taps, users = nic_backends(argv)
    if users:
        out.unavailable["net"] = (
            f"user-mode NICs ({', '.join(users)}) have no host-side counters in QEMU"
        )
    return out


async def block_stats(qmp: QMPSession) -> dict[str, DiskIO]:
    """Per attached disk (named as in the spec: device id ``dev-NAME``) its I/O counters."""
    reply = await qmp.execute("query-blockstats")
    disks: dict[str, DiskIO] = {}
    for entry in reply if isinstance(reply, list) else []:
        name = _disk_name(entry)
        stats = entry.get("stats") or {}
        if not name:
            continue
        disks[name] = DiskIO(
            read_bytes_total=int(stats.get("rd_bytes", 0)),
            write_bytes_total=int(stats.get("wr_bytes", 0)),
            read_ops_total=int(stats.get("rd_operations", 0)),
            write_ops_total=int(stats.get("wr_operations", 0)),
        )
    return disks


def _disk_name(entry: dict[str, Any]) -> str:
    """``/machine/peripheral/dev-root/virtio-backend`` -> ``root``; else the node name."""
    qdev = str(entry.get("qdev") or "")
    for part in qdev.split("/"):
        if part.startswith("dev-"):
            return part[4:]
    return str(entry.get("node-name") or entry.get("device") or "")


async def _balloon(qmp: QMPSession, out: DriverStats, polling: bool) -> None:
    try:
        reply = await qmp.execute("query-balloon")
        out.balloon_actual_bytes = int(reply["actual"]) if isinstance(reply, dict) else None
    except QMPError as err:
        out.unavailable["balloon"] = f"no balloon: {err.message}"
        return
    if not polling:
        with contextlib.suppress(QMPError):
            await qmp.execute(
                "qom-set",
                {
                    "path": BALLOON_PATH,
                    "property": "guest-stats-polling-interval",
                    "value": GUEST_STATS_POLL_S,
                },
            )
    try:
        reply = await qmp.execute("qom-get", {"path": BALLOON_PATH, "property": "guest-stats"})
    except QMPError as err:
        out.unavailable["guest_memory"] = f"guest-stats: {err.message}"
        return
    stats = reply.get("stats", {}) if isinstance(reply, dict) else {}
    # The guest driver reports -1 until it has polled once (or without a driver at all).
    out.guest_memory = {
        _GUEST_STATS[k]: int(v) for k, v in stats.items() if k in _GUEST_STATS and int(v) >= 0
    }
    if not out.guest_memory:
        out.unavailable["guest_memory"] = "the guest's balloon driver reports no statistics (yet)"


def nic_backends(argv: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """From QEMU's argv: ``{netdev id: tap ifname}`` and the ids of user-mode netdevs."""
    taps: dict[str, str] = {}
    users: list[str] = []
    for flag, value in itertools.pairwise(argv):
        if flag != "-netdev":
            continue
        kind, _, rest = value.partition(",")
        opts = dict(part.partition("=")[::2] for part in rest.split(",") if part)
        ident = opts.get("id", kind)
        if kind == "tap" and opts.get("ifname"):
            taps[ident] = opts["ifname"]
        elif kind == "user":
            users.append(ident)
    return taps, users
