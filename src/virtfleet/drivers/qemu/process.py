"""Launching and ending one QEMU process. No QMP, no store: argv in, PID out.

QEMU is started through a tiny shell wrapper that first moves itself into the
VM's cgroups (in cgroup v1 memory already charged does not move with a
process, so QEMU must start inside), then starts QEMU in the background and
exits: QEMU is orphaned at once, so it outlives the agent and the agent never
has to reap it. (QEMU's own -daemonize forks after its seccomp sandbox is on,
which ``spawn=deny`` forbids.) Output goes to a file, never a pipe we read.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
from collections.abc import Sequence
from pathlib import Path

import psutil

from virtfleet.drivers.qemu.config import RunPaths
from virtfleet.errors import ProcessError, TimeoutError_

# "$@" is: pid file, procs files..., "--", QEMU argv...
_WRAPPER = (
    'pidout=$1; shift; while [ "$1" != "--" ]; do echo $$ > "$1" || exit 97; shift; done; '
    'shift; "$@" & echo $! > "$pidout"'
)
START_TIMEOUT_S = 30.0


def tail(path: Path, lines: int = 8) -> str:
    """The last lines of a log file as one line, for error messages."""
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text[-lines:] if line.strip())


def prepare_run_dir(paths: RunPaths) -> None:
    """Create the run directory (root's alone) and its empty jail; clear leftovers of a
    previous run (not the serial log): a chrooted QEMU cannot remove its sockets."""
    paths.root.mkdir(parents=True, exist_ok=True, mode=0o700)
    paths.root.chmod(0o700)  # also a directory made by an older version (0750)
    paths.jail.mkdir(exist_ok=True, mode=0o500)
    stale = (paths.qmp, paths.serial, paths.vnc, paths.qga, paths.pidfile, paths.stderr)
    for path in (*stale, paths.qmp_log):
        path.unlink(missing_ok=True)


def qmp_listener(paths: RunPaths) -> socket.socket:
    """The QMP socket, bound and listening before QEMU runs (QEMU inherits it: ``fd=``), so
    the daemon connects at once and QMP answers as soon as QEMU's main loop does."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(paths.qmp))
        sock.listen(4)
    except OSError as err:
        sock.close()
        raise ProcessError(f"cannot listen on {paths.qmp}: {err}") from err
    return sock


async def launch(
    argv: Sequence[str], paths: RunPaths, cgroup_procs: Sequence[Path], pass_fds: Sequence[int] = ()
) -> int:
    """Start QEMU detached from us; return its PID (it may still be initialising).
    ``pass_fds``: descriptors QEMU inherits under the same numbers."""
    launched = paths.root / "launch.pid"
    launched.unlink(missing_ok=True)
    wrapper = ["/bin/sh", "-c", _WRAPPER, "sh", str(launched), *map(str, cgroup_procs), "--"]
    wrapper += argv
    with open(paths.stderr, "ab") as out:
        proc = await asyncio.create_subprocess_exec(
            *wrapper,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
            pass_fds=tuple(pass_fds),
        )
    try:
        code = await asyncio.wait_for(proc.wait(), START_TIMEOUT_S)
    except TimeoutError as err:
        proc.kill()
        raise TimeoutError_(f"the QEMU launcher hung for {START_TIMEOUT_S:.0f} s") from err
    if code == 97:
        raise ProcessError(f"could not enter the VM's cgroup: {tail(paths.stderr)}")
    try:
        return int(launched.read_text().strip())
    except (OSError, ValueError) as err:
        raise ProcessError(f"QEMU launcher failed (exit {code}): {tail(paths.stderr)}") from err


async def wait_exit(pid: int) -> None:
    """Return once ``pid`` has exited: a pidfd turns readable then (no polling)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    loop = asyncio.get_running_loop()
    exited: asyncio.Future[None] = loop.create_future()

    def on_exit() -> None:
        if not exited.done():
            exited.set_result(None)

    loop.add_reader(fd, on_exit)
    try:
        await exited
    finally:
        loop.remove_reader(fd)
        os.close(fd)


def create_time(pid: int, paths: RunPaths) -> float:
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error as err:
        raise ProcessError(f"QEMU exited while starting: {tail(paths.stderr)}") from err


async def wait_gone(pid: int, timeout_s: float) -> bool:
    """Wait until ``pid`` no longer runs; True if it is gone within the timeout."""
    try:
        await asyncio.wait_for(wait_exit(pid), timeout_s)
    except TimeoutError:
        return False
    return True


def pid_running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def kill(pid: int) -> None:
    """SIGKILL ``pid``; a process that is already gone is fine."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGKILL)
