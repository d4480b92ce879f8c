"""Memory: platform RSS per running VM, and QEMU's own overhead beyond guest RAM.

1. Daemon (API + agent) RSS growth from 0 to N running tiny VMs (target <= 1 MiB/VM).
2. QEMU overhead beyond guest RAM under TCG for a booted guest: RSS, anonymous memory and
   PSS outside the guest-RAM mapping, for variants of the argv virtfleet launched, with the
   boot time to the marker (wall) and QEMU's CPU seconds to it (all threads; far less
   sensitive to other work on the machine than the wall time), interleaved.
   A variant is a TCG translation-cache size in MiB (0 = QEMU's default; "32" = the argv
   as virtfleet makes it), optionally with "+nothp" (transparent huge pages off for the
   QEMU process: prctl(PR_SET_THP_DISABLE) before exec) or "+overcommit" (the explicit
   `-overcommit mem-lock=off,cpu-pm=off`, QEMU's defaults).
3. ``ksm``: what KSM could merge: two VMs booted side by side, their resident anonymous
   pages hashed (translation cache, other QEMU memory, guest RAM): zero pages and pages
   present in both. Reads /proc/PID/mem; changes no host setting.
Usage: .venv/bin/python bench/vm_memory.py [N_VMS] [RUNS] [VARIANTS, e.g. 32,16,0,32+nothp] [ksm]
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import re
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil
from _daemon import BenchDaemon, has_marker, kill_pidfile, wait_for
from vm_start import BOOT_TIMEOUT_S, template_argv

MIB = 1024 * 1024
PAGE = 4096
PR_SET_THP_DISABLE = 41


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


def mappings(pid: int) -> list[dict[str, int | str]]:
    """/proc/PID/smaps as one dict per mapping: lo, hi, perms and the kB fields."""
    out: list[dict[str, int | str]] = []
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        if m := re.match(r"^([0-9a-f]+)-([0-9a-f]+) (\S+)", line):
            out.append({"lo": int(m.group(1), 16), "hi": int(m.group(2), 16), "perms": m.group(3)})
        elif m := re.match(r"^(\w+):\s+(\d+) kB", line):
            out[-1][m.group(1)] = int(m.group(2))
    return out


def is_guest_ram(mapping: dict[str, int | str], guest_mib: int) -> bool:
    """The guest-RAM mapping is exactly guest-RAM sized (the translation cache is a mapping
    of its own, so a 1 GiB default one is not mistaken for guest RAM of 1 GiB)."""
    size_kib = (int(mapping["hi"]) - int(mapping["lo"])) // 1024
    return guest_mib * 1024 <= size_kib <= guest_mib * 1024 + 4096


def qemu_overhead_mib(pid: int, guest_mib: int) -> dict[str, float]:
    """QEMU's memory outside the guest-RAM mapping: RSS, anonymous and PSS in MiB.

    RSS includes the QEMU binary and libraries, which every VM on a host shares (PSS
    splits them among the processes mapping them); anonymous memory (TCG translation
    cache, heap, device state) is what each additional VM really costs."""
    totals = {"Rss": 0, "Anonymous": 0, "Pss": 0}
    for mapping in mappings(pid):
        if not is_guest_ram(mapping, guest_mib):
            for key in totals:
                totals[key] += int(mapping.get(key, 0))
    return {key: kib / 1024 for key, kib in totals.items()}


@dataclass
class Raw:
    """One raw QEMU booted from virtfleet's argv in a scratch directory."""

    proc: subprocess.Popen[bytes]
    work: Path
    guest_mib: int
    boot_s: float
    cpu_s: float

    @property
    def pid(self) -> int:
        return int((self.work / "qemu.pid").read_text())

    def close(self) -> None:
        kill_pidfile(self.work / "qemu.pid")
        self.proc.wait(10)
        shutil.rmtree(self.work, ignore_errors=True)


def variant_argv(argv: list[str], variant: str) -> tuple[list[str], bool]:
    """argv for ``variant`` ("TB[+nothp][+overcommit]"), and whether THP is to be off."""
    tb, *flags = variant.split("+")
    accel = f"tcg,tb-size={tb}" if int(tb) else "tcg"
    args = [re.sub(r"^tcg(,tb-size=\d+)?$", accel, a) for a in argv]
    if "overcommit" in flags:
        args[1:1] = ["-overcommit", "mem-lock=off,cpu-pm=off"]
    return args, "nothp" in flags


def no_thp() -> Callable[[], None]:
    libc = ctypes.CDLL(None, use_errno=True)

    def disable() -> None:  # runs in the child before exec; inherited across exec
        if libc.prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_THP_DISABLE)")

    return disable


def boot_raw(argv: list[str], run_dir: str, disk: str, image: Path, variant: str) -> Raw:
    """Boot raw QEMU with virtfleet's argv changed as ``variant`` says, to the boot marker.
    QMP listens before exec as virtfleet does it (an inherited socket), in a fresh jail."""
    work = Path(tempfile.mkdtemp(prefix="vfm", dir="/tmp"))
    overlay = work / "root.qcow2"
    (work / "jail").mkdir(mode=0o755)  # QEMU's -run-with chroot= target
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(image), "-F", "qcow2", str(overlay)],
        check=True,
    )
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(work / "qmp.sock"))
    listener.listen(4)
    args, thp_off = variant_argv(argv, variant)
    args = [a.replace(run_dir, str(work)).replace(disk, str(overlay)) for a in args]
    args = [re.sub(r"id=qmp,fd=\d+", f"id=qmp,fd={listener.fileno()}", a) for a in args]
    mem = int(re.search(r"-m\s+(\d+)M", " ".join(args)).group(1))  # type: ignore[union-attr]
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        args,
        stdin=subprocess.DEVNULL,
        pass_fds=(listener.fileno(),),
        preexec_fn=no_thp() if thp_off else None,  # no threads here
    )
    listener.close()
    t1 = wait_for(lambda: has_marker(work / "serial.log"), BOOT_TIMEOUT_S)
    cpu = psutil.Process(proc.pid).cpu_times()
    return Raw(proc, work, mem, t1 - t0, cpu.user + cpu.system)


def measure(argv: list[str], run_dir: str, disk: str, image: Path, variant: str) -> list[float]:
    """[boot s, boot CPU s, RSS, anonymous, PSS MiB] of one boot of ``variant``."""
    raw = boot_raw(argv, run_dir, disk, image, variant)
    try:
        time.sleep(3)  # let the guest settle at its shell
        mem = qemu_overhead_mib(raw.pid, raw.guest_mib)
    finally:
        raw.close()
    return [raw.boot_s, raw.cpu_s, mem["Rss"], mem["Anonymous"], mem["Pss"]]


def compare(argv: list[str], run_dir: str, disk: str, image: Path, runs: int, spec: str) -> None:
    variants = spec.split(",")
    results: dict[str, list[list[float]]] = {v: [] for v in variants}
    for i in range(runs):
        for v in variants[i % len(variants) :] + variants[: i % len(variants)]:  # rotate
            results[v].append(measure(argv, run_dir, disk, image, v))
    med = {
        v: [statistics.median(col) for col in zip(*rows, strict=True)]
        for v, rows in results.items()
    }
    base = med.get("0")
    for v in variants:
        boot, cpu, rss, anon, pss = med[v]
        ratio = (
            f"; vs QEMU's default: boot {boot / base[0]:.3f}x, CPU {cpu / base[1]:.3f}x"
            if base
            else ""
        )
        label = f"tb-size={v} MiB" if v.split("+")[0] != "0" else f"QEMU default tb-size{v[1:]}"
        print(
            f"{label}: beyond guest RAM: RSS {rss:.1f} MiB, anonymous {anon:.1f} MiB, PSS {pss:.1f}"
            f" MiB; boot median {boot:.3f} s, CPU to the marker {cpu:.2f} s (n={runs}){ratio}"
        )


def page_hashes(pid: int, guest_mib: int) -> dict[str, list[bytes]]:
    """Hashes of the resident anonymous pages, by kind: tcg (the executable translation
    cache), guest (guest RAM), other."""
    found: dict[str, list[bytes]] = {"tcg": [], "other": [], "guest": []}
    with open(f"/proc/{pid}/pagemap", "rb") as pagemap, open(f"/proc/{pid}/mem", "rb") as mem:
        for m in mappings(pid):
            if not m.get("Anonymous"):
                continue
            lo, hi, perms = int(m["lo"]), int(m["hi"]), str(m["perms"])
            kind = "guest" if is_guest_ram(m, guest_mib) else "tcg" if "x" in perms else "other"
            pagemap.seek(lo // PAGE * 8)
            entries = struct.unpack(f"{(hi - lo) // PAGE}Q", pagemap.read((hi - lo) // PAGE * 8))
            for i, entry in enumerate(entries):
                if entry >> 63:  # present
                    mem.seek(lo + i * PAGE)
                    found[kind].append(hashlib.blake2b(mem.read(PAGE), digest_size=16).digest())
    return found


def ksm_candidates(argv: list[str], run_dir: str, disk: str, image: Path) -> None:
    """Pages KSM could merge between two VMs of the same image, booted side by side."""
    zero = hashlib.blake2b(bytes(PAGE), digest_size=16).digest()
    vms = [boot_raw(argv, run_dir, disk, image, "32") for _ in range(2)]
    try:
        time.sleep(3)  # both at their shells
        hashes = [page_hashes(vm.pid, vm.guest_mib) for vm in vms]
    finally:
        for vm in vms:
            vm.close()
    for kind in ("tcg", "other", "guest"):
        a, b = Counter(hashes[0][kind]), Counter(hashes[1][kind])
        dup = sum(n - 1 for h, n in a.items() if h != zero)
        shared = sum(min(n, b[h]) for h, n in a.items() if h != zero and h in b)
        print(
            f"KSM, {kind}: {len(hashes[0][kind]) * PAGE / MIB:.1f} MiB resident in VM 1; zero "
            f"pages {a[zero] * PAGE / MIB:.2f} MiB, duplicates within it {dup * PAGE / MIB:.2f} "
            f"MiB, identical pages in VM 2 {shared * PAGE / MIB:.2f} MiB"
        )


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    spec = sys.argv[3] if len(sys.argv) > 3 else "32,0"
    d = BenchDaemon()
    try:
        if count:
            daemon_rss_per_vm(d, count)
        argv, run_dir, disk = template_argv(d)
        image = d.data_dir / "images" / "tiny.qcow2"
        if runs:
            compare(argv, run_dir, disk, image, runs, spec)
        if "ksm" in sys.argv[4:]:
            ksm_candidates(argv, run_dir, disk, image)
        print(json.dumps({"runs": runs, "vms": count, "variants": spec}))
    finally:
        d.close()


if __name__ == "__main__":
    main()
