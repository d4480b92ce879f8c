"""Clone benchmarks: linked-clone creation p50 (in-process qcow2 header vs qemu-img create),
full-clone throughput vs ``cp`` of the same file, and wall time to deploy 10 linked clones
from a template through the API until all 10 print their boot marker.

Usage: cd bench && ../.venv/bin/python clone.py [LINKED_RUNS]
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _daemon import BenchDaemon, has_marker, wait_for

from virtfleet.client import imaging
from virtfleet.storage import clones, qcow2

FULL_MIB = 1024


def linked_p50(base: Path, size: int, runs: int, work: Path) -> tuple[float, float]:
    """(in-process p50, qemu-img create p50) in ms, interleaved."""
    ours, forked = [], []
    for i in range(runs):
        dest = work / f"l{i}.qcow2"
        t0 = time.perf_counter()
        qcow2.write_overlay(dest, base, size)  # what clones.linked does, minus the event loop
        ours.append(time.perf_counter() - t0)
        dest2 = work / f"q{i}.qcow2"
        t0 = time.perf_counter()
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "qcow2", str(dest2)],
            check=True,
        )
        forked.append(time.perf_counter() - t0)
        dest.unlink()
        dest2.unlink()
    return statistics.median(ours) * 1000, statistics.median(forked) * 1000


def full_throughput(work: Path) -> tuple[float, float]:
    """(clones.full MiB/s, cp MiB/s) on a FULL_MIB qcow2 full of data, best of 3 each."""
    raw = work / "data.raw"
    with raw.open("wb") as f:
        for _ in range(FULL_MIB):
            f.write(os.urandom(1 << 20))
    src = work / "data.qcow2"
    subprocess.run(
        ["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(src)], check=True
    )
    raw.unlink()
    mib = src.stat().st_size / (1 << 20)
    ours, cp = [], []
    for i in range(3):
        t0 = time.perf_counter()
        asyncio.run(clones.full(src, work / f"f{i}.qcow2"))
        ours.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        subprocess.run(["cp", str(src), str(work / f"c{i}.qcow2")], check=True)
        cp.append(time.perf_counter() - t0)
        (work / f"f{i}.qcow2").unlink()
        (work / f"c{i}.qcow2").unlink()
    return mib / min(ours), mib / min(cp)


def api_clone_p50(d: BenchDaemon, runs: int) -> float:
    """p50 in ms of one linked clone through the API (POST -> operation success, not started)."""
    times = []
    for i in range(runs):
        t0 = time.perf_counter()
        op = d.client.call(imaging.clone_template("gold", [f"api-{i}"]))
        wait_for(lambda op_id=op.id: d.client.get_operation(op_id).status == "success", 60, 0.001)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def deploy_ten(d: BenchDaemon) -> tuple[float, float]:
    """(API call -> operation done, API call -> all 10 boot markers) in s."""
    t0 = time.perf_counter()
    op = d.client.call(imaging.clone_template("gold", ["web-{1..10}"], start=True))
    t_op = wait_for(lambda: d.client.get_operation(op.id).status == "success", 300, 0.05)
    names = [f"web-{i}" for i in range(1, 11)]
    t_all = wait_for(lambda: all(has_marker(d.serial_log(n)) for n in names), 600, 0.1)
    return t_op - t0, t_all - t0


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    work = Path(tempfile.mkdtemp(prefix="vfclone", dir="/var/tmp"))
    d = BenchDaemon()
    try:
        tiny = Path(d.client.get_image("tiny").path)
        size = d.client.get_image("tiny").virtual_size_bytes
        ours, forked = linked_p50(tiny, size, runs, work)
        print(
            f"linked clone p50: in-process {ours:.3f} ms, "
            f"qemu-img create {forked:.3f} ms (n={runs})"
        )
        fast, cp = full_throughput(work)
        print(f"full clone: {fast:.0f} MiB/s, cp {cp:.0f} MiB/s, ratio {fast / cp:.2f}x")
        op = d.client.call(imaging.create_template("gold", image="tiny"))
        assert d.client.wait_operation(op.id, timeout_s=120).status == "success"
        print(f"linked clone through the API p50: {api_clone_p50(d, 30):.1f} ms (n=30)")
        t_op, t_all = deploy_ten(d)
        print(
            f"deploy 10 linked clones: operation done {t_op:.2f} s, all boot markers {t_all:.2f} s"
        )
    finally:
        d.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
