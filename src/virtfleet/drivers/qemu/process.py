"""Launching and ending one QEMU process. No QMP, no store: argv in, PID out.

QEMU is started through a tiny shell wrapper that first moves itself into the
VM's cgroups (in cgroup v1 memory already charged does not move with a
process, so QEMU must start inside), then ``exec``s QEMU, which daemonizes:
its parent exits once the QMP socket listens, and the VM outlives the agent.
Output goes to a file, never a pipe we read.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path

import psutil

from virtfleet.errors import ProcessError, TimeoutError_
from virtfleet.drivers.qemu.config import RunPaths

# "$@" is: procs files..., "--", QEMU argv...
_WRAPPER = 'while [ "$1" != "--" ]; do echo $$ > "$1" || exit 97; shift; done; shift; exec "$@"'
START_TIMEOUT_S = 60.0


def tail(path: Path, lines: int = 8) -> str:
    """The last lines of a log file as one line, for error messages."""
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text[-lines:] if line.strip())


def prepare_run_dir(paths: RunPaths) -> None:
    """Create the run directory and clear leftovers of a previous run (not the serial log)."""
    paths.root.mkdir(parents=True, exist_ok=True, mode=0o750)
    for stale in (paths.qmp, paths.serial, paths.pidfile, paths.stderr, paths.qmp_log):
        stale.unlink(missing_ok=True)


async def launch(argv: Sequence[str], paths: RunPaths, cgroup_procs: Sequence[Path]) -> int:
    """Start daemonizing QEMU; return its PID once QMP listens. Raises ProcessError."""
    wrapper = ["/bin/sh", "-c", _WRAPPER, "sh", *map(str, cgroup_procs), "--", *argv]
    with open(paths.stderr, "ab") as out:
        proc = await asyncio.create_subprocess_exec(
            *wrapper, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True
        )
    try:
        code = await asyncio.wait_for(proc.wait(), START_TIMEOUT_S)
    except TimeoutError as err:
        proc.kill()
        raise TimeoutError_(f"QEMU did not finish starting within {START_TIMEOUT_S:.0f} s") from err
    if code == 97:
        raise ProcessError(f"could not enter the VM's cgroup: {tail(paths.stderr)}")
    if code != 0:
        raise ProcessError(f"QEMU failed to start (exit {code}): {tail(paths.stderr)}")
    return read_pid(paths)


def read_pid(paths: RunPaths) -> int:
    try:
        return int(paths.pidfile.read_text().strip())
    except (OSError, ValueError) as err:
        raise ProcessError(f"QEMU started but wrote no usable pidfile: {err}") from err


def create_time(pid: int) -> float:
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error as err:
        raise ProcessError(f"QEMU (pid {pid}) exited right after starting") from err


async def wait_gone(pid: int, timeout_s: float) -> bool:
    """Wait until ``pid`` no longer runs; True if it is gone within the timeout."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        if not pid_running(pid):
            return True
        await asyncio.sleep(0.05)
    return not pid_running(pid)


def pid_running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def kill(pid: int) -> None:
    """SIGKILL ``pid``; a process that is already gone is fine."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGKILL)
