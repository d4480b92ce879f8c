"""A VM's TPM 2.0 emulator: one ``swtpm`` process per VM, started before its QEMU.

QEMU's sandbox forbids it spawning helpers, so the driver starts swtpm itself: inside the
VM's cgroups, as the VM's unprivileged uid (root only when QEMU runs as root too), its
state in a directory beside the disks that only that uid can write. We bind the control
socket (in the root-only run directory) and hand swtpm the listening descriptor; QEMU
connects to it before dropping privileges. ``--terminate`` ends swtpm when QEMU's
connection goes, so it lives exactly as long as the VM and, like QEMU, outlives the
agent (its pid is in the runtime record). Must not decide policy or touch the store.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
from collections.abc import Sequence
from pathlib import Path

from virtfleet.drivers.qemu.config import RunPaths
from virtfleet.errors import HostError, ProcessError

SWTPM = "swtpm"
START_TIMEOUT_S = 10.0
# "$@" is: pid file, procs files..., "--", argv... (as process.py's wrapper: enter the
# cgroups first, then run the command detached).
_WRAPPER = (
    'pidout=$1; shift; while [ "$1" != "--" ]; do echo $$ > "$1" || exit 97; shift; done; '
    'shift; "$@" & echo $! > "$pidout"'
)


def prepare_state(state: Path, uid: int | None) -> None:
    """The state directory and its files, owned by the uid swtpm runs as (0700): files put
    back as root's by a revert, a restore or a clone become this start's uid's."""
    state.mkdir(mode=0o700, parents=True, exist_ok=True)
    if uid is not None:
        for entry in (state, *state.iterdir()):
            os.lchown(entry, uid, uid)
    state.chmod(0o700)


def argv(uid: int | None, ctrl_fd: int) -> list[str]:
    """swtpm's command line; the state is its working directory ("."), which the drop to
    ``uid`` keeps reachable although the disk directory above it is root's alone."""
    drop = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"] if uid else []
    return [
        *drop,
        SWTPM,
        "socket",
        "--tpm2",
        "--tpmstate",
        "dir=.,mode=0600",
        "--ctrl",
        f"type=unixio,fd={ctrl_fd}",
        "--terminate",
        "--log",
        "level=1",  # errors on stderr, our log file (it cannot open files of ours)
    ]


async def start(paths: RunPaths, state: Path, uid: int | None, cgroup_procs: Sequence[Path]) -> int:
    """Start swtpm for the VM of ``paths``; its pid. Raises ``HostError`` if swtpm is not
    installed, ``ProcessError`` if it does not come up (nothing left running)."""
    if shutil.which(SWTPM) is None:
        raise HostError("a TPM needs swtpm, which is not installed: apt-get install swtpm")
    prepare_state(state, uid)
    paths.swtpm.unlink(missing_ok=True)
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(paths.swtpm))
        listener.listen(1)
        pidfile = paths.root / "swtpm.pid"
        pidfile.unlink(missing_ok=True)
        wrapper = ["/bin/sh", "-c", _WRAPPER, "sh", str(pidfile), *map(str, cgroup_procs), "--"]
        with open(paths.swtpm_log, "ab") as log:
            proc = await asyncio.create_subprocess_exec(
                *wrapper, *argv(uid, listener.fileno()), cwd=state,
                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                start_new_session=True, pass_fds=(listener.fileno(),),
            )  # fmt: skip
        code = await asyncio.wait_for(proc.wait(), START_TIMEOUT_S)
        pid = _read_pid(pidfile, code, paths)
    return pid


def _read_pid(pidfile: Path, code: int, paths: RunPaths) -> int:
    try:
        return int(pidfile.read_text().strip())
    except (OSError, ValueError) as err:
        log = paths.swtpm_log.read_text(errors="replace")[-400:] if paths.swtpm_log.exists() else ""
        raise ProcessError(f"swtpm did not start (exit {code}): {log.strip()}") from err
