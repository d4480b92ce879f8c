"""Latency of live resource changes: PATCH call -> operation done -> the guest sees it.

One tiny VM (TCG). A watcher loop inside the guest prints its memory, online
vCPUs and block devices (with vdb's size) to the serial console whenever they
change; the host times from the API call to the line showing the new state.
Usage: .venv/bin/python bench/live_resources.py [ROUNDS]
"""

from __future__ import annotations

import contextlib
import re
import socket
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from _daemon import BenchDaemon, has_marker, wait_for

from virtfleet.client import resources as calls

VM = "bench"
# Shell builtins only (read, set, echo): forking under TCG would slow the guest down.
WATCH = (
    "o=; while :; do read x m y < /proc/meminfo; read c < /sys/devices/system/cpu/online; "
    "set -- /sys/block/*; s=; [ -e /sys/block/vdb/size ] && read s < /sys/block/vdb/size; "
    'n="M=$m C=$c B=$* S=$s"; [ "$n" != "$o" ] && echo "ST $n"; o=$n; sleep 0.05; done &'
)
_STATE = re.compile(r"ST M=(\d+) C=(\S+) B=(.*?) S=(\d*)\r?$", re.MULTILINE)


def type_line(d: BenchDaemon, line: str) -> None:
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(d.data_dir / "run" / VM / "serial.sock"))
        s.sendall(line.encode() + b"\n")
        s.settimeout(0.05)  # keep reading while attached: an unread console stalls the guest
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                s.recv(65536)


def states(d: BenchDaemon) -> list[tuple[int, str, str, str]]:
    text = d.serial_log(VM).read_text(errors="replace")
    return [(int(m[1]), m[2], m[3], m[4]) for m in _STATE.finditer(text)]


def measure(
    d: BenchDaemon, body: dict[str, Any], seen: Callable[[tuple[int, str, str, str]], bool]
) -> tuple[float, float]:
    """(API call -> operation success, API call -> guest shows the change), in seconds."""
    before = len(states(d))
    t0 = time.perf_counter()
    op = d.client.call(calls.patch_instance(VM, body))
    t_op = wait_for(lambda: d.client.get_operation(op.id).status.done, 120)
    final = d.client.get_operation(op.id)
    if final.status != "success":
        qemu_log = d.data_dir / "run" / VM / "qemu.log"
        tail = qemu_log.read_text(errors="replace")[-600:] if qemu_log.exists() else ""
        raise RuntimeError(f"{body}: {final.error_message} {tail}")
    t_guest = wait_for(lambda: any(seen(s) for s in states(d)[before:]), 120, poll_s=0.01)
    return t_op - t0, t_guest - t0


def main(rounds: int) -> None:
    d = BenchDaemon()
    try:
        spec = {"name": VM, "image": "tiny", "memory_mib": 512, "max_memory_mib": 512}
        # Under TCG a QEMU process creates at most maxcpus vCPUs in its life: one per round.
        op = d.client.create_instance({**spec, "vcpus": 1, "max_vcpus": rounds + 1}, start=True)
        d.client.wait_operation(op.id, timeout_s=120)
        wait_for(lambda: has_marker(d.serial_log(VM)), 120)
        time.sleep(2)  # the shell prompt comes after the marker
        type_line(d, WATCH)
        try:
            wait_for(lambda: bool(states(d)), 30)
        except TimeoutError:
            print(repr(d.serial_log(VM).read_text(errors="replace")[-1500:]))
            raise
        results: dict[str, list[tuple[float, float]]] = {}
        full = states(d)[-1][0]
        for i in range(rounds):
            results.setdefault("balloon 512 -> 384 MiB", []).append(
                measure(d, {"memory_mib": 384}, lambda s: s[0] < full - 100 * 1024)
            )
            measure(d, {"memory_mib": 512}, lambda s: s[0] > full - 16 * 1024)
            results.setdefault("vCPU hot-add (1 -> 2)", []).append(
                measure(d, {"vcpus": 2}, lambda s: s[1] == "0-1")
            )
            measure(d, {"vcpus": 1}, lambda s: s[1] == "0")
            disk = f"d{i}"
            add = {"disks_add": [{"name": disk, "size_gib": 0.0625}]}
            results.setdefault("disk hot-add (64 MiB)", []).append(
                measure(d, add, lambda s: "vdb" in s[2] and s[3] == str(64 * 2048))
            )
            grow = {"disk_sizes_gib": {disk: 0.125}}
            results.setdefault("disk grow (64 -> 128 MiB)", []).append(
                measure(d, grow, lambda s: s[3] == str(128 * 2048))
            )
            measure(d, {"disks_remove": [disk]}, lambda s: "vdb" not in s[2])
        print("| change | n | API op done (p50) | guest sees it (p50) | guest sees it (max) |")
        print("| --- | --- | --- | --- | --- |")
        for name, samples in results.items():
            ops, guests = [s[0] for s in samples], [s[1] for s in samples]
            print(
                f"| {name} | {len(samples)} | {statistics.median(ops) * 1000:.0f} ms | "
                f"{statistics.median(guests) * 1000:.0f} ms | {max(guests) * 1000:.0f} ms |"
            )
    finally:
        d.close()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
