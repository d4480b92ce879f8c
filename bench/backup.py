"""Backups and memory snapshots, measured on real TCG guests in one run.

1. A VM with a 1 GiB data disk (half random, half repetitive data): a first (full)
   backup, an incremental of the unchanged disk (target <= 5 s), an incremental after
   the guest rewrote 256 MiB (target >= 200 MiB/s per stream) and a forced full backup
   of the same disk for comparison.
2. Dedup: 10 linked clones of the tiny image backed up into the same repository.
3. Guest pause of a memory snapshot (live save to a file, virtfleet's way) vs HMP
   ``savevm``, both on the same raw QEMU, measured from QEMU's STOP/RESUME event
   timestamps; plus the pause the daemon reports for API memory snapshots.

Usage: ``cd bench && ../.venv/bin/python backup.py`` (all parts), or
``../.venv/bin/python backup.py --pauses``: only the pauses, i.e. part 3 plus daemon memory
snapshots on fresh VMs (the first snapshot of a VM included), each reported pause checked
against the STOP/RESUME events in that VM's QMP log; or ``../.venv/bin/python backup.py
--backup-vm``: only part 1 (the backup VM's backups, then its 3 memory snapshots); or
``../.venv/bin/python backup.py --series 20``: 20 consecutive memory snapshots of a fresh
VM, then of the backup VM after its backups, each pause cut into its phases.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shutil
import statistics
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from _daemon import BenchDaemon, has_marker, kill_pidfile, wait_for
from vm_start import template_argv

from virtfleet.client import backups as calls
from virtfleet.drivers.qemu import vmstate
from virtfleet.drivers.qemu.qmp import QMPSession

MIB = 2**20


def op(d: BenchDaemon, call: Any, timeout_s: float = 900) -> dict[str, Any]:
    done = d.client.wait_operation(d.client.call(call).id, timeout_s=timeout_s)
    assert done.status == "success", done
    return done.result or {}


def guest(d: BenchDaemon, vm: str, cmd: str, timeout_s: float = 600) -> None:
    import socket

    tag = secrets.token_hex(4)
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(d.data_dir / "run" / vm / "serial.sock"))
        s.sendall(f"{cmd}; sync; echo T{tag}=$((6*7))\n".encode())
        s.settimeout(0.5)  # keep reading a moment: an unread console stalls the guest's tty
        with contextlib.suppress(TimeoutError):
            while s.recv(65536):
                pass
    done = f"T{tag}=42"
    wait_for(lambda: done in d.serial_log(vm).read_text(errors="replace"), timeout_s, 0.2)


def fill_data_disk(path: Path) -> None:
    """1 GiB: 512 MiB random + 512 MiB of repeated text (compressible, like OS files)."""
    raw = path.with_suffix(".raw")
    text = (b"virtfleet backup benchmark line of fairly ordinary text\n" * 20000)[:MIB]
    with open(raw, "wb") as fh:
        for i in range(1024):
            fh.write(os.urandom(MIB) if i % 2 == 0 else text)
    subprocess.run(
        ["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(path)], check=True
    )
    raw.unlink()


def line(label: str, r: dict[str, Any]) -> str:
    s = r["stats"]
    rate = s["bytes_read"] / MIB / s["seconds"] if s["seconds"] else 0.0
    return (
        f"| {label} | {r['kind']} | {s['seconds']:.2f} s | {s['copy_seconds']:.2f} s | "
        f"{s['store_seconds']:.2f} s | {s['bytes_read'] / MIB:.0f} MiB | "
        f"{rate:.0f} MiB/s | {s['bytes_written'] / MIB:.1f} MiB |"
    )


def disk_backups(d: BenchDaemon, snapshots: int = 0) -> list[str]:
    """Backups of a VM with a 1 GiB data disk, then memory snapshots of it: 3, or a
    ``series`` of ``snapshots`` with their phases."""
    vm = "bk"
    disks = [{"name": "root", "image": "tiny", "boot": True}, {"name": "data", "size_gib": 1}]
    d.client.wait_operation(
        d.client.create_instance({"name": vm, "image": "tiny", "disks": disks}, start=True).id,
        timeout_s=120,
    )
    d.client.wait_operation(d.client.change_state(vm, "stop", force=True).id, timeout_s=60)
    fill_data_disk(d.data_dir / "disks" / vm / "data.qcow2")
    d.client.wait_operation(d.client.change_state(vm, "start").id, timeout_s=120)
    wait_for(lambda: has_marker(d.serial_log(vm)), 180, 0.2)
    rows = [line("first backup (1 GiB data + root)", op(d, calls.create_backup(vm)))]
    rows.append(line("unchanged, incremental", op(d, calls.create_backup(vm))))
    guest(d, vm, "dd if=/dev/urandom of=/dev/vdb bs=1M count=256 seek=128 2>/dev/null")
    rows.append(line("256 MiB rewritten, incremental", op(d, calls.create_backup(vm))))
    rows.append(line("same disk, forced full", op(d, calls.create_backup(vm, full=True))))
    if snapshots:
        rows += series(d, vm, snapshots)
    else:
        pauses = [
            op(d, calls.create_snapshot(vm, f"mem{i}", memory=True))["pause_ms"] for i in range(3)
        ]
        rows.append(
            f"\ndaemon memory snapshots (256 MiB guest): pause_ms {[round(p, 1) for p in pauses]}"
        )
    d.client.wait_operation(d.client.delete_instance(vm, force=True, disks=True).id, timeout_s=120)
    return rows


def dedup(d: BenchDaemon, clones: int = 10) -> str:
    for i in range(clones):
        d.client.wait_operation(
            d.client.create_instance({"name": f"c{i}", "image": "tiny"}, start=True).id,
            timeout_s=120,
        )
        d.client.wait_operation(d.client.change_state(f"c{i}", "stop", force=True).id, timeout_s=60)
    repo = d.data_dir / "backups"
    before = {p.name for p in (repo / "chunks").glob("*/*.zst")}
    logical = 0
    for i in range(clones):
        logical += op(d, calls.create_backup(f"c{i}"))["stats"]["bytes_read"]
    refs: list[str] = []
    for path in (repo / "backups").glob("c*/*.json"):
        for dm in json.loads(path.read_text())["disks"].values():
            refs += [c for c in dm["chunks"] if c != "zero"]
    new = [p for p in (repo / "chunks").glob("*/*.zst") if p.name not in before]
    unique = set(refs)
    stored = sum((repo / "chunks" / c[:2] / f"{c}.zst").stat().st_size for c in unique)
    return (
        f"{clones} linked clones: {logical / MIB:.0f} MiB read, {len(refs)} chunk references, "
        f"{len(unique)} unique chunks (dedup {len(refs) / max(1, len(unique)):.1f}x); "
        f"their unique chunks take {stored / MIB:.1f} MiB compressed "
        f"(logical/stored {logical / max(1, stored):.1f}x); {len(new)} new chunk files "
        "(the rest was already stored by the first VM's backups)"
    )


async def _pauses(sock: Path, work: Path, rounds: int = 3) -> tuple[list[float], list[float]]:
    qmp = await QMPSession.connect(sock, timeout_s=30, command_timeout_s=120)
    seen: list[tuple[str, float]] = []

    async def collect() -> None:
        async for ev in qmp.events():
            if ev.name in ("STOP", "RESUME"):
                seen.append((ev.name, ev.timestamp))

    task = asyncio.create_task(collect())

    async def last_pause() -> float:
        await asyncio.sleep(0.3)
        stop = max(t for n, t in seen if n == "STOP")
        resume = min(t for n, t in seen if n == "RESUME" and t >= stop)
        return (resume - stop) * 1000

    async def nothing() -> None:
        return None

    live, save = [], []
    for i in range(rounds):
        fd = os.open(work / f"state{i}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            await vmstate.save(qmp, fd, nothing)
        finally:
            os.close(fd)
        live.append(await last_pause())
        await qmp.human_monitor_command(f"savevm bench{i}")
        save.append(await last_pause())
    task.cancel()
    await qmp.close()
    return live, save


def pause_vs_savevm(d: BenchDaemon) -> str:
    argv, run_dir, disk = template_argv(d)
    work = Path(tempfile.mkdtemp(prefix="vfp", dir="/tmp"))
    try:
        overlay = work / "root.qcow2"
        image = d.data_dir / "images" / "tiny.qcow2"
        cmd = ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(image), "-F", "qcow2"]
        subprocess.run([*cmd, str(overlay)], check=True)
        args = [a.replace(run_dir, str(work)).replace(disk, str(overlay)) for a in argv]
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL)
        wait_for(lambda: has_marker(work / "serial.log"), 180, 0.2)
        live, save = asyncio.run(_pauses(work / "qmp.sock", work))
        kill_pidfile(work / "qemu.pid")
        proc.wait(10)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return (
        f"guest pause, 256 MiB TCG guest, same QEMU: live save to file median "
        f"{statistics.median(live):.1f} ms {[round(x, 1) for x in live]}; "
        f"savevm median {statistics.median(save):.1f} ms {[round(x, 1) for x in save]}"
    )


def logged_pause_ms(qmp_log: Path) -> float:
    """The last STOP -> RESUME in a daemon VM's QMP log, from QEMU's event timestamps."""
    seen: list[tuple[str, float]] = []
    for text in qmp_log.read_text().splitlines():
        msg = json.loads(text)["msg"]
        if isinstance(msg, dict) and msg.get("event") in ("STOP", "RESUME"):
            stamp = msg["timestamp"]
            seen.append((msg["event"], stamp["seconds"] + stamp["microseconds"] / 1e6))
    stop = max(t for n, t in seen if n == "STOP")
    return (min(t for n, t in seen if n == "RESUME" and t >= stop) - stop) * 1000


def _stamp(msg: dict[str, Any]) -> float:
    return float(msg["timestamp"]["seconds"]) + msg["timestamp"]["microseconds"] / 1e6


def pause_phases(qmp_log: Path) -> dict[str, float]:
    """The last pause in a VM's QMP log cut at each event and command, in ms from STOP:
    ``device`` (QEMU's MIGRATION status device: RAM's last round starts), ``completed``
    (state written, disks inactivated), then the daemon's commands (sent -> answered)
    up to ``cont`` and QEMU's RESUME. QEMU's timestamps and the log's share one clock."""
    rows = [json.loads(text) for text in qmp_log.read_text().splitlines()]
    start = max(i for i, r in enumerate(rows) if r["msg"].get("event") == "STOP")
    stop = _stamp(rows[start]["msg"])
    phases: dict[str, float] = {}
    pending: dict[object, str] = {}
    for r in rows[start + 1 :]:
        msg = r["msg"]
        if event := msg.get("event"):
            label = event if event != "MIGRATION" else msg["data"]["status"]
            phases.setdefault(label, (_stamp(msg) - stop) * 1000)
            if event == "RESUME":
                break
        elif r["dir"] == "send" and msg.get("execute") != "query-status":
            pending[msg.get("id")] = str(msg["execute"])
            phases.setdefault(f"{msg['execute']} sent", (r["ts"] - stop) * 1000)
        elif r["dir"] == "recv" and msg.get("id") in pending:
            phases.setdefault(f"{pending.pop(msg['id'])} done", (r["ts"] - stop) * 1000)
    return phases


def phase_line(phases: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.1f}" for k, v in phases.items())


def series(d: BenchDaemon, vm: str, count: int) -> list[str]:
    """``count`` consecutive memory snapshots of ``vm``: each pause with its phases."""
    log = d.data_dir / "run" / vm / "qmp.log"
    pauses, rows = [], []
    for i in range(count):
        pauses.append(op(d, calls.create_snapshot(vm, f"ser{i}", memory=True))["pause_ms"])
        rows.append(f"  {i + 1}: {pauses[-1]:.1f} ms ({phase_line(pause_phases(log))})")
    rows.append(
        f"{vm}: {count} memory snapshots: pause median {statistics.median(pauses):.1f} ms, "
        f"max {max(pauses):.1f} ms, first {pauses[0]:.1f} ms, "
        f"<= 50 ms: {sum(p <= 50 for p in pauses)} of {count}"
    )
    return rows


def fresh_series(d: BenchDaemon, count: int) -> list[str]:
    vm = "fresh"
    spec = {"name": vm, "image": "tiny", "memory_mib": 256}
    d.client.wait_operation(d.client.create_instance(spec, start=True).id, timeout_s=120)
    wait_for(lambda: has_marker(d.serial_log(vm)), 180, 0.2)
    rows = series(d, vm, count)
    d.client.wait_operation(d.client.delete_instance(vm, force=True, disks=True).id, timeout_s=120)
    return rows


def daemon_pauses(d: BenchDaemon, vms: int = 2, per_vm: int = 5) -> list[str]:
    """Memory snapshots through the API on fresh 256 MiB VMs: reported vs real pause."""
    rows, reported, real = [], [], []
    for v in range(vms):
        vm = f"mp{v}"
        spec = {"name": vm, "image": "tiny", "memory_mib": 256}
        d.client.wait_operation(d.client.create_instance(spec, start=True).id, timeout_s=120)
        wait_for(lambda: has_marker(d.serial_log(vm)), 180, 0.2)  # noqa: B023 - used at once
        mine, theirs = [], []
        for i in range(per_vm):
            mine.append(op(d, calls.create_snapshot(vm, f"s{i}", memory=True))["pause_ms"])
            theirs.append(logged_pause_ms(d.data_dir / "run" / vm / "qmp.log"))
        rows.append(
            f"{vm}: reported pause_ms {[round(p, 1) for p in mine]}; "
            f"STOP->RESUME {[round(p, 1) for p in theirs]}"
        )
        reported += mine
        real += theirs
        gone = d.client.delete_instance(vm, force=True, disks=True)
        d.client.wait_operation(gone.id, timeout_s=120)
    rows.append(
        f"daemon memory snapshots, {vms} fresh 256 MiB TCG VMs x {per_vm}: pause median "
        f"{statistics.median(real):.1f} ms, max {max(real):.1f} ms (first of each VM: "
        f"{[round(real[i * per_vm], 1) for i in range(vms)]}); reported = QEMU's STOP->RESUME: "
        f"{all(abs(a - b) < 0.05 for a, b in zip(reported, real, strict=True))}"
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--pauses", action="store_true", help="only the memory snapshot pause measurements"
    )
    parser.add_argument(
        "--backup-vm",
        action="store_true",
        help="only the backup VM: its backups, then 3 memory snapshots of it",
    )
    parser.add_argument(
        "--series",
        type=int,
        default=0,
        metavar="N",
        help="N consecutive memory snapshots of a fresh VM, then of the backup VM after its "
        "backups, each pause cut into phases from the VM's QMP log",
    )
    args = parser.parse_args()
    only_pauses = args.pauses
    d = BenchDaemon()
    try:
        if args.series:
            for row in fresh_series(d, args.series) + disk_backups(d, args.series):
                print(row, flush=True)
            return
        if args.backup_vm:
            for row in disk_backups(d):
                print(row)
            return
        if only_pauses:
            print(pause_vs_savevm(d))
            for row in daemon_pauses(d):
                print(row)
            return
        print("| backup | kind | time | QEMU copy | chunking | read | throughput | stored (zstd) |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        for row in disk_backups(d):
            print(row)
        print(dedup(d))
        print(pause_vs_savevm(d))
    finally:
        d.close()


if __name__ == "__main__":
    main()
