"""One teardown for every integration daemon: after the daemon has stopped (or was killed),
end what it started and left by design or by crash — QEMUs, runtime containers, dnsmasq —
then unmount its rootfs mounts and remove its cgroup parent and runtime directory.

A daemon stop leaves guests running on purpose (a restart must not harm them), so their
cgroups outlive it; a SIGKILLed daemon removes nothing. ``reap`` checks that the cgroup
parent is really gone, so a leak fails the test that made it instead of piling up."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import psutil

from virtfleet.app.settings import Settings

from .oci import unmount_under

CGROUP_ROOT = Path("/sys/fs/cgroup")


def cgroup_parent(data_dir: Path) -> str:
    """The cgroup parent a daemon on ``data_dir`` puts its guests and containers under."""
    return f"virtfleet-{Settings(data_dir=data_dir).instance_id}"


def kill_qemus(data_dir: Path) -> None:
    """SIGKILL every QEMU whose command line names ``data_dir``, and wait until they exit."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if "qemu-system" in cmdline and str(data_dir) in cmdline:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
                found.append(proc)
    psutil.wait_procs(found, timeout=10)


def end_containers(data_dir: Path) -> None:
    """``runc delete -f`` every container the runtime still knows for ``data_dir``."""
    state = data_dir / "oci" / "state"
    for entry in state.glob("*/state.json") if state.exists() else []:
        argv = ["runc", "--root", str(state), "delete", "-f", entry.parent.name]
        subprocess.run(argv, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def end_dnsmasqs(data_dir: Path) -> None:
    for pidfile in data_dir.glob("networks/*/dnsmasq.pid"):
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(pidfile.read_text()), signal.SIGTERM)


def remove_cgroups(data_dir: Path) -> None:
    """Remove the (emptied) cgroup parent of ``data_dir`` in every hierarchy; fail if one
    stays: something the daemon started is still alive in it."""
    tops = list(CGROUP_ROOT.glob(f"*/{cgroup_parent(data_dir)}"))
    deadline = time.monotonic() + 10  # killed processes leave their cgroups within moments
    while tops and time.monotonic() < deadline:
        for top in tops:
            for path in [*sorted(top.rglob("*/"), reverse=True), top]:
                with contextlib.suppress(OSError):
                    path.rmdir()
        tops = [t for t in tops if t.exists()]
        if tops:
            time.sleep(0.05)
    assert not tops, f"cgroups left behind (a process still in them?): {tops}"


def reap(data_dir: Path) -> None:
    """Everything a stopped daemon on ``data_dir`` may have left, gone (data_dir kept)."""
    kill_qemus(data_dir)
    end_containers(data_dir)
    end_dnsmasqs(data_dir)
    runtime = Settings(data_dir=data_dir).runtime_path
    unmount_under(runtime)
    unmount_under(data_dir)
    shutil.rmtree(runtime, ignore_errors=True)
    remove_cgroups(data_dir)
