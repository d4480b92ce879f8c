"""The metrics QMP queries (drivers/qemu/stats.py) against the scripted fake QMP server."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.protocol.fake_qmp import FakeQMPServer, error, ok
from virtfleet.drivers.qemu.qmp import QMPSession
from virtfleet.drivers.qemu.stats import collect

pytestmark = pytest.mark.timeout(30)

BLOCKSTATS = [
    {
        "device": "",
        "node-name": "disk-root",
        "qdev": "/machine/peripheral/dev-root/virtio-backend",
        "stats": {"rd_bytes": 4096, "wr_bytes": 8192, "rd_operations": 1, "wr_operations": 2},
    },
    {"device": "", "node-name": "disk-data", "stats": {"wr_bytes": 5}},
]
GUEST_STATS = {
    "stats": {
        "stat-total-memory": 268435456,
        "stat-available-memory": 200000000,
        "stat-swap-in": -1,
    },
    "last-update": 1,
}


async def test_collect_names_disks_balloon_guest_stats_and_nics(sock_dir: Path) -> None:
    """Disks are named after their device (else node), guest stats without -1s, NICs
    from argv; the periodic polls stay out of the QMP log, the one-time qom-set does not."""
    script = {
        "query-blockstats": lambda a: ok(BLOCKSTATS),
        "query-balloon": lambda a: ok({"actual": 268435456}),
        "qom-get": lambda a: ok(GUEST_STATS),
        "qom-set": lambda a: ok({}),
    }
    argv = ["qemu", "-netdev", "user,id=net0,restrict=on"]
    log = sock_dir / "qmp.log"
    async with FakeQMPServer(sock_dir / "q.sock", script) as fake:
        session = await QMPSession.connect(fake.path, timeout_s=2.0, log_path=log)
        try:
            found = await collect(session, argv, polling=False)
            await session.query_status()
        finally:
            await session.close()
    assert (
        found.disks["root"].write_bytes_total == 8192
        and found.disks["disk-data"].write_bytes_total == 5
    )
    assert found.balloon_actual_bytes == 268435456
    assert found.guest_memory == {"total_bytes": 268435456, "available_bytes": 200000000}
    assert found.taps == {} and "net0" in found.unavailable["net"]
    text = log.read_text()
    assert "query-status" in text and "guest-stats-polling-interval" in text
    assert "query-blockstats" not in text and "wr_bytes" not in text and "stat-total" not in text


async def test_collect_without_a_balloon(sock_dir: Path) -> None:
    """No balloon device: the balloon and guest memory are named as not available."""
    script = {
        "query-blockstats": lambda a: ok([]),
        "query-balloon": lambda a: error("No balloon device has been activated", "DeviceNotActive"),
    }
    async with FakeQMPServer(sock_dir / "q.sock", script) as fake:
        session = await QMPSession.connect(fake.path, timeout_s=2.0)
        try:
            found = await collect(session, [], polling=True)
        finally:
            await session.close()
    assert found.balloon_actual_bytes is None and "balloon" in found.unavailable
    assert found.disks == {}
