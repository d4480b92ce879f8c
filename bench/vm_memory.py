"""Memory: platform RSS per running VM, and QEMU's own overhead beyond guest RAM.

1. Daemon (API + agent) RSS growth from 0 to N running tiny VMs (target <= 1 MiB/VM).
2. QEMU overhead beyond guest RAM under TCG for a booted guest: private RSS minus
   the guest-RAM mapping, for several TCG translation-cache sizes (virtfleet's default: 32 MiB) vs
   QEMU's default, and the boot time of each, interleaved.
Usage: .venv/bin/python bench/vm_memory.py [N_VMS] [RUNS] [TB_SIZES, e.g. 16,32,0]
"""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psutil
from _daemon import BenchDaemon, has_marker, kill_pidfile, wait_for
from vm_start import template_argv

MIB = 1024 * 1024


def daemon_rss_per_vm(d: BenchDaemon, count: int) -> None:
    d.client.create_instance({"name": "warm", "image": "tiny", "memory_mib": 128}, start=True)
    wait_for(lambda: d.client.get_instance("warm").status.power == "running", 60)
    time.sleep(2)
    before = psutil.Process(d.proc.pid).memory_info().rss
    for i in range(count):
        op = d.client.create_instance({"name": f"m{i}", "image": "tiny", "memory_mib": 96}, True)
        d.client.wait_operation(op.id, timeout_s=120)
    time.sleep(2)
    after = psutil.Process(d.proc.pid).memory_info().rss
    per_vm = (after - before) / count / MIB
    print(
        f"daemon RSS {before / MIB:.1f} MiB with 1 VM -> {after / MIB:.1f} MiB with "
        f"{count + 1} VMs: {per_vm:.2f} MiB per VM"
    )
    for name in [f"m{i}" for i in range(count)] + ["warm"]:
        op = d.client.delete_instance(name, force=True, disks=True)
        d.client.wait_operation(op.id, timeout_s=60)


def qemu_overhead_mib(pid: int, guest_mib: int) -> tuple[float, float]:
    """QEMU's memory outside the guest-RAM mapping (exactly guest-RAM sized): (RSS, anonymous).

    RSS includes the QEMU binary and libraries, which every VM on a host shares;
    anonymous memory (TCG translation cache, heap, device state) is what each
    additional VM really costs. The translation cache is a mapping of its own,
    so matching on size alone would mistake a 1 GiB default one for guest RAM.
    """
    totals = {"Rss": 0, "Anonymous": 0}
    is_guest = False
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        if m := re.match(r"^Size:\s+(\d+) kB", line):
            is_guest = guest_mib * 1024 <= int(m.group(1)) <= guest_mib * 1024 + 4096
        elif (m := re.match(r"^(Rss|Anonymous):\s+(\d+) kB", line)) and not is_guest:
            totals[m.group(1)] += int(m.group(2))
    return totals["Rss"] / 1024, totals["Anonymous"] / 1024


def boot_raw(
    argv: list[str], run_dir: str, disk: str, image: Path, tb: int
) -> tuple[float, tuple[float, float]]:
    """Boot raw QEMU with TCG tb-size ``tb`` MiB (0 = QEMU's default): boot s, overheads."""
    import shutil
    import tempfile

    work = Path(tempfile.mkdtemp(prefix="vfm", dir="/tmp"))
    overlay = work / "root.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(image), "-F", "qcow2", str(overlay)],
        check=True,
    )
    args = [a.replace(run_dir, str(work)).replace(disk, str(overlay)) for a in argv]
    args = [re.sub(r",tb-size=\d+", f",tb-size={tb}" if tb else "", a) for a in args]
    t0 = time.perf_counter()
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL)
    t1 = wait_for(lambda: has_marker(work / "serial.log"), 120)
    time.sleep(3)  # let the guest settle at its shell
    pid = int((work / "qemu.pid").read_text())
    mem = int(re.search(r"-m\s+(\d+)M", " ".join(args)).group(1))  # type: ignore[union-attr]
    overhead = qemu_overhead_mib(pid, mem)
    kill_pidfile(work / "qemu.pid")
    proc.wait(10)
    shutil.rmtree(work, ignore_errors=True)
    return t1 - t0, overhead


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    d = BenchDaemon()
    try:
        if count:
            daemon_rss_per_vm(d, count)
        argv, run_dir, disk = template_argv(d)
        image = d.data_dir / "images" / "tiny.qcow2"
        sizes = [int(x) for x in (sys.argv[3] if len(sys.argv) > 3 else "16,0").split(",")]
        results: dict[int, list[tuple[float, tuple[float, float]]]] = {tb: [] for tb in sizes}
        for i in range(runs):
            for tb in sizes[i % len(sizes) :] + sizes[: i % len(sizes)]:  # rotate the order
                results[tb].append(boot_raw(argv, run_dir, disk, image, tb))
        base = statistics.median(b for b, _ in results[0]) if 0 in results else None
        for tb in sizes:
            boot = statistics.median(b for b, _ in results[tb])
            rss = statistics.median(o[0] for _, o in results[tb])
            anon = statistics.median(o[1] for _, o in results[tb])
            ratio = f", {boot / base:.3f}x the default's boot" if base else ""
            label = f"tb-size={tb} MiB" if tb else "QEMU default tb-size"
            print(
                f"{label}: beyond guest RAM: RSS {rss:.1f} MiB, anonymous {anon:.1f} MiB; "
                f"boot median {boot:.3f} s (n={runs}){ratio}"
            )
        print(json.dumps({"runs": runs, "vms": count}))
    finally:
        d.close()


if __name__ == "__main__":
    main()
