"""Shared benchmark plumbing: a throwaway daemon on its own data directory."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from virtfleet.client import Client

VIRTFLEET = str(Path(sys.executable).parent / "virtfleet")


class BenchDaemon:
    def __init__(self) -> None:
        self.data_dir = Path(tempfile.mkdtemp(prefix="vfb", dir="/tmp"))
        self.client = Client(uds_path=self.data_dir / "api.sock")
        log = open(self.data_dir / "daemon.log", "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            [VIRTFLEET, "--data-dir", str(self.data_dir), "serve", "--listen", "none"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        log.close()
        wait_for(self._answers, 60, poll_s=0.1)
        op = self.client.build_image("tiny")
        assert self.client.wait_operation(op.id, timeout_s=300).status == "success"

    def _answers(self) -> bool:
        try:
            self.client.list_instances()
        except Exception:  # not up yet, whatever the reason
            return False
        return True

    def serial_log(self, name: str) -> Path:
        return self.data_dir / "run" / name / "serial.log"

    def close(self) -> None:
        for inst in self.client.list_instances():
            op = self.client.delete_instance(inst.name, force=True, disks=True)
            self.client.wait_operation(op.id, timeout_s=60)
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(20)
        shutil.rmtree(self.data_dir, ignore_errors=True)


def wait_for(cond: object, timeout_s: float, poll_s: float = 0.005) -> float:
    """Poll ``cond`` until true; return the time it became true (perf_counter)."""
    deadline = time.perf_counter() + timeout_s
    while time.perf_counter() < deadline:
        if cond():  # type: ignore[operator]
            return time.perf_counter()
        time.sleep(poll_s)
    raise TimeoutError(f"condition not met within {timeout_s} s")


def has_marker(path: Path) -> bool:
    try:
        return b"VIRTFLEET-READY" in path.read_bytes()
    except OSError:
        return False


def report(name: str, ours: list[float], raw: list[float], unit: str = "s") -> None:
    mo, mr = statistics.median(ours), statistics.median(raw)
    print(
        f"{name}: virtfleet median {mo:.3f} {unit} (n={len(ours)}), "
        f"raw median {mr:.3f} {unit} (n={len(raw)}), ratio {mo / mr:.3f}x"
    )


def kill_pidfile(pidfile: Path) -> None:
    with contextlib.suppress(OSError, ValueError):
        os.kill(int(pidfile.read_text()), signal.SIGKILL)
