"""State refresh of a real running VM through the API vs a raw QMP round trip, same run.

GET /1.0/instances/{name} (observed state kept current by the agent from QMP
events) on a booted tiny VM, against `query-status` on the QMP socket of a raw
QEMU started with the same argv. Target: the API adds <= 2 ms at the median.
Usage: .venv/bin/python bench/api_refresh.py [REQUESTS]
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _daemon import BenchDaemon, has_marker, kill_pidfile, wait_for
from qemu.qmp import QMPClient
from vm_start import template_argv


async def qmp_round_trips(sock: Path, count: int) -> list[float]:
    client = QMPClient("bench")
    await client.connect(str(sock))
    times = []
    for _ in range(count):
        t0 = time.perf_counter()
        await client.execute("query-status")
        times.append((time.perf_counter() - t0) * 1000)
    await client.disconnect()
    return times


def api_round_trips(d: BenchDaemon, name: str, count: int) -> list[float]:
    times = []
    for _ in range(count):
        t0 = time.perf_counter()
        d.client.get_instance(name)
        times.append((time.perf_counter() - t0) * 1000)
    return times


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 500
    d = BenchDaemon()
    work = Path(tempfile.mkdtemp(prefix="vfq", dir="/tmp"))
    try:
        argv, run_dir, disk = template_argv(d)
        op = d.client.create_instance({"name": "live", "image": "tiny"}, start=True)
        d.client.wait_operation(op.id, timeout_s=60)
        wait_for(lambda: has_marker(d.serial_log("live")), 120)
        image = d.data_dir / "images" / "tiny.qcow2"
        overlay = work / "root.qcow2"
        subprocess.run(
            [
                "qemu-img",
                "create",
                "-q",
                "-f",
                "qcow2",
                "-b",
                str(image),
                "-F",
                "qcow2",
                str(overlay),
            ],
            check=True,
        )
        args = [a.replace(run_dir, str(work)).replace(disk, str(overlay)) for a in argv]
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL)
        wait_for(lambda: has_marker(work / "serial.log"), 120)
        api, qmp = [], []
        for _ in range(5):  # interleave in blocks
            api += api_round_trips(d, "live", count // 5)
            qmp += asyncio.run(qmp_round_trips(work / "qmp.sock", count // 5))
        p50_api, p50_qmp = statistics.median(api), statistics.median(qmp)
        print(
            f"GET instance (API, httpx over the Unix socket): p50 {p50_api:.2f} ms, "
            f"p99 {statistics.quantiles(api, n=100)[98]:.2f} ms (n={len(api)})"
        )
        print(
            f"raw QMP query-status round trip: p50 {p50_qmp:.2f} ms, "
            f"p99 {statistics.quantiles(qmp, n=100)[98]:.2f} ms (n={len(qmp)})"
        )
        print(f"API adds {p50_api - p50_qmp:.2f} ms at the median (target <= 2 ms)")
        kill_pidfile(work / "qemu.pid")
        proc.wait(10)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        d.close()


if __name__ == "__main__":
    main()
