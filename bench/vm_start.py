"""create+start -> boot marker: virtfleet vs raw qemu-system-x86_64 with identical arguments.

Runs interleaved (alternating which goes first), prints medians and the ratio.
The raw run reuses the exact argv virtfleet launched (taken from a runtime
record), with its own run directory, a pre-made disk overlay and, under UEFI, its own
copy of the VM's variable store. ``uefi``: the EFI tiny image under OVMF (and, for
comparison, the BIOS boot of tiny in the same run); ``tpm``: the UEFI VM with a vTPM,
reporting swtpm's memory (PSS) per VM.
Usage: .venv/bin/python bench/vm_start.py [RUNS] [bios|uefi|tpm]
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

BOOT_TIMEOUT_S = 300  # OVMF + shim + GRUB under TCG are slower than SeaBIOS


def qmp_answered(sock: socket.socket) -> None:
    """Read the QMP greeting, negotiate and have ``query-status`` answered on ``sock``."""
    stream = sock.makefile("rwb")
    stream.readline()  # the greeting: QEMU's main loop runs
    for command in (b"qmp_capabilities", b"query-status"):
        stream.write(b'{"execute": "%s"}\n' % command)
        stream.flush()
        while b'"return"' not in stream.readline():
            pass  # an event came first


MODES = {  # what a VM of each mode is created with
    "bios": {"image": "tiny", "memory_mib": 256},
    # UEFI runs get 512 MiB (OVMF's Secure Boot build hangs the kernel at 256, measured by
    # tests/integration/test_firmware.py), and so does the BIOS boot they are compared with.
    "bios-512": {"image": "tiny", "memory_mib": 512},
    "uefi": {"image": "tiny-efi", "memory_mib": 512, "firmware": "uefi"},
    "tpm": {"image": "tiny-efi", "memory_mib": 512, "firmware": "uefi", "tpm": True},
}


def time_virtfleet(d: BenchDaemon, name: str, mode: str = "bios") -> tuple[float, float]:
    """(API call -> VM running with QMP attached, API call -> boot marker)."""
    t0 = time.perf_counter()
    op = d.client.create_instance({"name": name, **MODES[mode]}, start=True)
    t_up = wait_for(lambda: d.client.get_operation(op.id).status == "success", 60)
    t1 = wait_for(lambda: has_marker(d.serial_log(name)), BOOT_TIMEOUT_S)
    op = d.client.delete_instance(name, force=True, disks=True)
    d.client.wait_operation(op.id, timeout_s=60)
    return t_up - t0, t1 - t0


def template_argv(d: BenchDaemon, mode: str = "bios") -> tuple[list[str], str, str]:
    """The argv virtfleet used for a VM, with the run dir and disk it pointed at."""
    d.client.create_instance({"name": "tmpl", **MODES[mode]}, start=True)
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
    (work / "jail").mkdir(mode=0o755)  # QEMU's -run-with chroot= target, as virtfleet makes it
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(image), "-F", "qcow2", str(overlay)],
        check=True,
    )
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(work / "qmp.sock"))
    listener.listen(4)
    args = [a.replace(run_dir, str(work)).replace(disk, str(overlay)) for a in argv]
    for store in _vars_stores(argv):  # the VM's own UEFI variables: a fresh copy per run
        shutil.copyfile(store, work / Path(store).name)
        args = [a.replace(store, str(work / Path(store).name)) for a in args]
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


def _vars_stores(argv: list[str]) -> list[str]:
    """The writable UEFI variable store files the argv names (the fw-vars flash)."""
    return [
        json.loads(a)["file"]["filename"]
        for a in argv
        if a.startswith("{") and json.loads(a).get("node-name") == "fw-vars"
    ]


def swtpm_pss_kib(d: BenchDaemon, name: str) -> int:
    """The proportional set size of the swtpm serving ``name`` (its pid from the run dir)."""
    for pidfile in (d.data_dir / "run" / name).glob("*swtpm*.pid"):
        pid = int(pidfile.read_text().split()[0])
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
        return int(re.search(r"^Pss:\s+(\d+) kB", rollup, re.M).group(1))  # type: ignore[union-attr]
    raise RuntimeError(f"no swtpm pid file for {name}")


def compare(d: BenchDaemon, runs: int, mode: str) -> None:
    """Interleaved virtfleet vs raw QEMU runs of ``mode``; BIOS as well under UEFI."""
    argv, run_dir, disk = template_argv(d, mode)
    image = d.data_dir / "images" / f"{MODES[mode]['image']}.qcow2"
    ours: list[tuple[float, float]] = []
    raw: list[tuple[float, float]] = []
    bios: list[tuple[float, float]] = []
    for i in range(runs):
        order = ("vf", "raw", "bios") if i % 2 == 0 else ("bios", "raw", "vf")
        for kind in order:
            if kind == "vf":
                ours.append(time_virtfleet(d, f"b{i}", mode))
            elif kind == "raw":
                raw.append(time_raw(argv, run_dir, disk, image))
            elif mode != "bios":
                bios.append(time_virtfleet(d, f"c{i}", "bios-512"))
        print(f"run {i}: virtfleet {ours[-1][1]:.3f} s, raw {raw[-1][1]:.3f} s", flush=True)
    report(f"start -> QEMU up (QMP), {mode}", [o[0] for o in ours], [r[0] for r in raw])
    report(f"create+start -> boot marker (TCG), {mode}", [o[1] for o in ours], [r[1] for r in raw])
    if bios:
        report(f"boot marker: virtfleet {mode} vs BIOS", [o[1] for o in ours], [b[1] for b in bios])


def tpm_memory(d: BenchDaemon, runs: int) -> None:
    """swtpm's PSS for ``runs`` running TPM VMs (kept running together, then deleted)."""
    sizes = []
    for i in range(runs):
        d.client.create_instance({"name": f"t{i}", **MODES["tpm"]}, start=True)
        wait_for(lambda n=f"t{i}": has_marker(d.serial_log(n)), BOOT_TIMEOUT_S)
        sizes.append(swtpm_pss_kib(d, f"t{i}"))
    print(f"swtpm PSS per VM (KiB): {sizes}; median {sorted(sizes)[len(sizes) // 2]} KiB")
    for i in range(runs):
        op = d.client.delete_instance(f"t{i}", force=True, disks=True)
        d.client.wait_operation(op.id, timeout_s=60)


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    mode = sys.argv[2] if len(sys.argv) > 2 else "bios"
    d = BenchDaemon()
    try:
        if mode != "bios":
            op = d.client.build_image("tiny-efi", builder="tiny-efi")
            assert d.client.wait_operation(op.id, timeout_s=600).status == "success"
        if mode == "tpm":
            tpm_memory(d, runs)
        else:
            compare(d, runs, mode)
    finally:
        d.close()


if __name__ == "__main__":
    main()
