"""create+start -> boot marker: virtfleet vs raw qemu-system-x86_64 with identical arguments.

Runs interleaved (alternating which goes first), prints medians and the ratio.
The raw run reuses the exact argv virtfleet launched (taken from a runtime
record), with its own run directory and a pre-made disk overlay.
Usage: .venv/bin/python bench/vm_start.py [RUNS]
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _daemon import BenchDaemon, has_marker, kill_pidfile, report, wait_for

BOOT_TIMEOUT_S = 120


def qmp_answered(sock: socket.socket) -> None:
    """Read the QMP greeting, negotiate and have ``query-status`` answered on ``sock``."""
    stream = sock.makefile("rwb")
    stream.readline()  # the greeting: QEMU's main loop runs
    for command in (b"qmp_capabilities", b"query-status"):
        stream.write(b'{"execute": "%s"}\n' % command)
        stream.flush()
        while b'"return"' not in stream.readline():
            pass  # an event came first


def time_virtfleet(d: BenchDaemon, name: str) -> tuple[float, float]:
    """(API call -> VM running with QMP attached, API call -> boot marker)."""
    t0 = time.perf_counter()
    op = d.client.create_instance({"name": name, "image": "tiny", "memory_mib": 256}, start=True)
    t_up = wait_for(lambda: d.client.get_operation(op.id).status == "success", 60)
    t1 = wait_for(lambda: has_marker(d.serial_log(name)), BOOT_TIMEOUT_S)
    op = d.client.delete_instance(name, force=True, disks=True)
    d.client.wait_operation(op.id, timeout_s=60)
    return t_up - t0, t1 - t0


def template_argv(d: BenchDaemon) -> tuple[list[str], str, str]:
    """The argv virtfleet used for a VM, with the run dir and disk it pointed at."""
    d.client.create_instance({"name": "tmpl", "image": "tiny", "memory_mib": 256}, start=True)
    record = d.data_dir / "run" / "tmpl" / "runtime.json"
    wait_for(record.exists, 60)
    data = json.loads(record.read_text())
    op = d.client.delete_instance("tmpl", force=True, disks=False)
    d.client.wait_operation(op.id, timeout_s=60)
    return data["argv"], str(d.data_dir / "run" / "tmpl"), data["disks"]["root"]


def time_raw(argv: list[str], run_dir: str, disk: str, image: Path) -> tuple[float, float]:
    """(exec -> QMP answered, exec -> boot marker) for raw QEMU, measured as virtfleet does
    it: the QMP socket listens before exec (QEMU inherits it), then connect and query."""
    work = Path(tempfile.mkdtemp(prefix="vfr", dir="/tmp"))
    overlay = work / "root.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(image), "-F", "qcow2", str(overlay)],
        check=True,
    )
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(work / "qmp.sock"))
    listener.listen(4)
    args = [a.replace(run_dir, str(work)).replace(disk, str(overlay)) for a in argv]
    args = [re.sub(r"id=qmp,fd=\d+", f"id=qmp,fd={listener.fileno()}", a) for a in args]
    t0 = time.perf_counter()
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, pass_fds=(listener.fileno(),))
    listener.close()
    with socket.socket(socket.AF_UNIX) as client:
        client.connect(str(work / "qmp.sock"))
        qmp_answered(client)
        t_up = time.perf_counter()
    t1 = wait_for(lambda: has_marker(work / "serial.log"), BOOT_TIMEOUT_S)
    kill_pidfile(work / "qemu.pid")
    proc.wait(10)
    shutil.rmtree(work, ignore_errors=True)
    return t_up - t0, t1 - t0


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    d = BenchDaemon()
    try:
        argv, run_dir, disk = template_argv(d)
        image = d.data_dir / "images" / "tiny.qcow2"
        ours: list[tuple[float, float]] = []
        raw: list[tuple[float, float]] = []
        for i in range(runs):
            order = ("vf", "raw") if i % 2 == 0 else ("raw", "vf")
            for kind in order:
                if kind == "vf":
                    ours.append(time_virtfleet(d, f"b{i}"))
                else:
                    raw.append(time_raw(argv, run_dir, disk, image))
            print(f"run {i}: virtfleet {ours[-1][1]:.3f} s, raw {raw[-1][1]:.3f} s", flush=True)
        report("start -> QEMU up (QMP)", [o[0] for o in ours], [r[0] for r in raw])
        report("create+start -> boot marker (TCG)", [o[1] for o in ours], [r[1] for r in raw])
    finally:
        d.close()


if __name__ == "__main__":
    main()
