"""Integration fixtures: a real daemon (``virtfleet serve``) booting real QEMU guests.

Each test gets its own short data directory under /tmp (unix socket paths are
limited to 108 bytes) and its own daemon process, so tests can SIGKILL it. On
failure the serial logs, QMP logs, QEMU stderr and the daemon log are copied
to artifacts/<test>/ before everything is torn down.
"""

from __future__ import annotations

import contextlib
import os
import pty
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from virtfleet.client import Client
from virtfleet.storage.builders.tiny import build_tiny

from .reaping import reap

ROOT = Path(__file__).resolve().parents[2]
VIRTFLEET = str(Path(sys.executable).parent / "virtfleet")
CACHE = Path(os.environ.get("VIRTFLEET_CACHE_DIR", "/var/cache/virtfleet"))
BOOT_TIMEOUT_S = 90.0


def _needs_root_and_qemu() -> None:
    if os.geteuid() != 0:
        pytest.skip("integration tests need root (cgroups, -runas)")
    if shutil.which("qemu-system-x86_64") is None:
        pytest.skip("qemu-system-x86_64 is not installed")


@pytest.fixture(scope="session")
def tiny_cache() -> Path:
    """The tiny guest image built once per session into the shared cache."""
    _needs_root_and_qemu()
    out = CACHE / "test-tiny.qcow2"
    build_tiny(out, CACHE)  # ~25 ms when cached; rebuilds when the builder changed
    return out


class Daemon:
    """One ``virtfleet serve`` process on its own data directory.

    Unix socket only by default (``--listen none``: tests never collide on port 8006);
    ``serve_args`` replaces that, e.g. with a loopback TLS listener.
    """

    def __init__(self, data_dir: Path, serve_args: Sequence[str] = ("--listen", "none")) -> None:
        self.data_dir = data_dir
        self.serve_args = list(serve_args)
        self.url = ""  # the TCP listener's URL, when it has one
        self.proc: subprocess.Popen[bytes] | None = None
        self.client = Client(uds_path=data_dir / "api.sock")
        self.env: dict[str, str] = {}  # extra environment for the daemon (settings)

    def start(self) -> None:
        sock = self.data_dir / "api.sock"
        sock.unlink(missing_ok=True)
        log = open(self.data_dir / "daemon.log", "ab")  # noqa: SIM115 - owned by the child
        env = {**os.environ, "VIRTFLEET_CACHE_DIR": str(CACHE), **self.env}
        self.proc = subprocess.Popen(
            [VIRTFLEET, "--data-dir", str(self.data_dir), "serve", *self.serve_args],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            env=env,
            start_new_session=True,
        )
        log.close()
        wait_for(lambda: _listening(sock), 30, "daemon socket")

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def run_dir(self, name: str) -> Path:
        return self.data_dir / "run" / name

    def serial_log(self, name: str) -> str:
        path = self.run_dir(name) / "serial.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def wait_marker(self, name: str, count: int = 1, timeout_s: float = BOOT_TIMEOUT_S) -> str:
        wait_for(
            lambda: self.serial_log(name).count("VIRTFLEET-READY") >= count,
            timeout_s,
            f"boot marker #{count} of {name}",
        )
        return self.serial_log(name)

    def create(self, name: str, start: bool = True, **fields: object) -> None:
        op = self.client.create_instance({"name": name, "image": "tiny", **fields}, start=start)
        done = self.client.wait_operation(op.id, timeout_s=120)
        assert done.status == "success", done

    def action(self, name: str, action: str, **kw: object) -> None:
        op = self.client.change_state(name, action, **kw)
        done = self.client.wait_operation(op.id, timeout_s=120)
        assert done.status == "success", done

    def type_line(self, name: str, line: str) -> None:
        """Type a command into the guest's serial shell."""
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(self.run_dir(name) / "serial.sock"))
            s.sendall(line.encode() + b"\n")
            # Keep reading while attached: an unread console stalls the guest's tty.
            s.settimeout(0.05)
            deadline = time.monotonic() + 0.3
            while time.monotonic() < deadline:
                with contextlib.suppress(TimeoutError):
                    s.recv(65536)

    def qemu_pid(self, name: str) -> int:
        pid = self.client.get_instance(name).status.pid
        assert pid is not None
        return pid


def _listening(sock: Path) -> bool:
    if not sock.exists():
        return False
    with socket.socket(socket.AF_UNIX) as s:
        try:
            s.connect(str(sock))
        except OSError:
            return False
    return True


def in_pty(
    args: list[str], env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], int]:
    """Run ``args`` on a fresh pseudo-terminal, as a person at a terminal would; (process, fd)."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        args, stdin=follower, stdout=follower, stderr=follower, env=env, start_new_session=True
    )
    os.close(follower)
    return proc, leader


def read_until(fd: int, needle: bytes, timeout_s: float) -> bytes:
    """What the terminal ``fd`` printed until ``needle`` appeared (or the timeout passed)."""
    seen = b""
    deadline = time.monotonic() + timeout_s
    while needle not in seen and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                seen += os.read(fd, 4096)
            except OSError:
                break
    return seen


def wait_for(cond: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


@pytest.fixture
def daemon(request: pytest.FixtureRequest, tiny_cache: Path) -> Iterator[Daemon]:
    """A running daemon with the ``tiny`` image; every QEMU it started is killed after."""
    yield from _running_daemon(request, ("--listen", "none"))


@pytest.fixture
def tls_daemon(request: pytest.FixtureRequest, tiny_cache: Path) -> Iterator[Daemon]:
    """Like ``daemon``, also serving HTTPS (self-signed) on a free loopback port: ``d.url``."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    for d in _running_daemon(request, ("--listen", f"127.0.0.1:{port}", "--tls")):
        d.url = f"https://127.0.0.1:{port}"
        yield d


def module_daemon(
    request: pytest.FixtureRequest, env: dict[str, str] | None = None
) -> Iterator[Daemon]:
    """A daemon for a whole test module (share booted guests between its cases)."""
    yield from _running_daemon(request, ("--listen", "none"), env)


def _running_daemon(
    request: pytest.FixtureRequest, serve_args: Sequence[str], env: dict[str, str] | None = None
) -> Iterator[Daemon]:
    data_dir = Path(tempfile.mkdtemp(prefix="vf", dir="/tmp"))
    d = Daemon(data_dir, serve_args)
    d.env = env or {}
    d.start()
    op = d.client.build_image("tiny")
    assert d.client.wait_operation(op.id, timeout_s=300).status == "success"
    yield d
    failed = getattr(request.node, "rep_call", None)
    if failed is not None and failed.failed:
        _keep_artifacts(request.node.name, data_dir)
    d.stop()
    reap(data_dir)
    shutil.rmtree(data_dir, ignore_errors=True)


def _keep_artifacts(test: str, data_dir: Path) -> None:
    dest = ROOT / "artifacts" / test
    dest.mkdir(parents=True, exist_ok=True)
    for pattern in ("daemon.log", "run/*/serial.log", "run/*/qmp.log", "run/*/qemu.log"):
        for path in data_dir.glob(pattern):
            rel = path.relative_to(data_dir)
            target = dest / str(rel).replace("/", "_")
            shutil.copy(path, target)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> object:
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
