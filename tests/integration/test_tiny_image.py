"""Boots the ``tiny`` guest image under QEMU (TCG) straight from its disk.

Covers the virtio path (q35 + virtio-blk), the emulated legacy path (pc +
IDE), ACPI power-off through QMP and the serial root shell. QEMU is run
directly here, not through the platform's driver.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from virtfleet.storage.builders.tiny import build_tiny

QEMU = "qemu-system-x86_64"
BOOT_TIMEOUT = 60.0
POWERDOWN_TIMEOUT = 10.0

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="building the tiny image needs root"),
    pytest.mark.skipif(
        shutil.which(QEMU) is None or shutil.which("qemu-img") is None,
        reason="qemu-system-x86_64 and qemu-img are not installed",
    ),
]


class Guest:
    """One QEMU process booting an overlay of the tiny image; killed on close."""

    def __init__(self, workdir: Path, image: Path, machine: str, disk_device: str) -> None:
        self.workdir = workdir
        self.serial_log = workdir / "serial.log"
        self.overlay = workdir / "disk.qcow2"
        self.machine = machine
        self.disk_device = disk_device
        self.proc: subprocess.Popen[bytes] | None = None
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(image),
             str(self.overlay)],
            check=True,
        )  # fmt: skip

    def start(
        self, *extra: str, serial: list[str] | None = None, hostname: str | None = "vm1"
    ) -> None:
        name = (
            []
            if hostname is None
            else ["-fw_cfg", f"name=opt/virtfleet/hostname,string={hostname}"]
        )
        cmd = [
            QEMU, "-machine", self.machine, "-accel", "tcg", "-m", "256", "-smp", "2",
            "-nodefaults", "-display", "none",
            "-drive", f"file={self.overlay},if=none,id=d0,format=qcow2",
            "-device", f"{self.disk_device},drive=d0",
            *(serial or ["-serial", f"file:{self.serial_log}"]),
            *name,
            *extra,
        ]  # fmt: skip
        stderr = (self.workdir / "qemu.stderr").open("wb")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr)
        stderr.close()

    def console(self) -> str:
        try:
            return self.serial_log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for(self, text: str, timeout: float = BOOT_TIMEOUT) -> str:
        """Wait until ``text`` shows up on the serial console; return the console."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = self.console()
            if text in out:
                return out
            assert self.proc is not None
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        pytest.fail(f"{text!r} not seen on the console:\n{self.diagnostics()}")

    def diagnostics(self) -> str:
        stderr = (self.workdir / "qemu.stderr").read_text(errors="replace")
        return f"--- serial (tail) ---\n{self.console()[-3000:]}\n--- qemu stderr ---\n{stderr}"

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture(scope="session")
def tiny_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache = Path(os.environ.get("VIRTFLEET_CACHE_DIR", "/var/cache/virtfleet"))
    out = tmp_path_factory.mktemp("tiny") / "tiny.qcow2"
    build_tiny(out, cache)
    return out


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A short directory under /tmp: unix socket paths must stay under ~100 chars."""
    path = Path(tempfile.mkdtemp(prefix="vft-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def make_guest(tiny_image: Path, workdir: Path) -> Iterator[Callable[[str, str], Guest]]:
    guests: list[Guest] = []

    def make(machine: str, disk_device: str) -> Guest:
        guest = Guest(workdir, tiny_image, machine, disk_device)
        guests.append(guest)
        return guest

    yield make
    for guest in guests:
        guest.close()


def test_boots_from_virtio_disk_on_q35(make_guest: Callable[[str, str], Guest]) -> None:
    guest = make_guest("q35", "virtio-blk-pci")
    guest.start()
    out = guest.wait_for("VIRTFLEET-READY hostname=vm1 cpus=2")
    assert out.count("VIRTFLEET-READY") == 1
    assert "mem_kib=" in out


def test_boots_from_ide_disk_on_pc(make_guest: Callable[[str, str], Guest]) -> None:
    guest = make_guest("pc", "ide-hd")
    guest.start()
    guest.wait_for("VIRTFLEET-READY hostname=vm1 cpus=2")


def test_default_hostname_without_fw_cfg(make_guest: Callable[[str, str], Guest]) -> None:
    guest = make_guest("q35", "virtio-blk-pci")
    guest.start(hostname=None)
    guest.wait_for("VIRTFLEET-READY hostname=tiny cpus=2")


def _qmp(path: Path, command: str, arguments: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run one QMP command on a fresh connection; return its reply."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(path))
        stream = sock.makefile("rwb")
        json.loads(stream.readline())  # greeting
        for execute, args in (("qmp_capabilities", None), (command, arguments)):
            message = {"execute": execute, **({"arguments": args} if args else {})}
            stream.write(json.dumps(message).encode() + b"\n")
            stream.flush()
            while True:
                reply: dict[str, Any] = json.loads(stream.readline())
                if "return" in reply or "error" in reply:
                    break
        return reply


def test_acpi_powerdown_stops_guest(make_guest: Callable[[str, str], Guest], workdir: Path) -> None:
    guest = make_guest("q35", "virtio-blk-pci")
    qmp = workdir / "qmp.sock"
    guest.start("-qmp", f"unix:{qmp},server=on,wait=off")
    guest.wait_for("VIRTFLEET-READY")
    assert "return" in _qmp(qmp, "system_powerdown")
    assert guest.proc is not None
    try:
        guest.proc.wait(timeout=POWERDOWN_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"QEMU still running after system_powerdown:\n{guest.diagnostics()}")


class SerialSocket:
    """The client end of a ``-chardev socket`` serial port, drained by a thread.

    It must be read continuously: QEMU writes the console a byte at a time and
    stops (stalling the guest's tty) once the unread socket buffer is full.
    """

    def __init__(self, path: Path) -> None:
        deadline = time.monotonic() + 10
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.connect(str(path))
        self._chunks: list[bytes] = []
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        with contextlib.suppress(OSError):
            while chunk := self._sock.recv(4096):
                self._chunks.append(chunk)

    def text(self) -> str:
        return b"".join(self._chunks).decode(errors="replace")

    def wait_for(self, text: str, timeout: float = BOOT_TIMEOUT) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in (out := self.text()):
                return out
            time.sleep(0.1)
        pytest.fail(f"{text!r} not seen on the serial socket:\n{self.text()[-3000:]}")

    def type_line(self, line: str) -> None:
        self._sock.sendall(line.encode() + b"\n")

    def close(self) -> None:
        self._sock.close()


@pytest.fixture
def serial_guest(
    make_guest: Callable[[str, str], Guest], workdir: Path
) -> Iterator[tuple[Guest, SerialSocket, Path]]:
    """A q35/virtio guest with its serial port on a socket, plus its QMP socket path."""
    guest = make_guest("q35", "virtio-blk-pci")
    sock_path, qmp = workdir / "serial.sock", workdir / "qmp.sock"
    chardev = f"socket,id=s0,path={sock_path},server=on,wait=off,logfile={guest.serial_log}"
    guest.start(
        "-smp", "1,maxcpus=4", "-qmp", f"unix:{qmp},server=on,wait=off",
        serial=["-chardev", chardev, "-serial", "chardev:s0"],
    )  # fmt: skip
    serial = SerialSocket(sock_path)
    yield guest, serial, qmp
    serial.close()


def test_serial_root_shell(serial_guest: tuple[Guest, SerialSocket, Path]) -> None:
    _, serial, _ = serial_guest
    serial.wait_for("VIRTFLEET-READY")
    serial.wait_for("vm1:~# ")
    serial.type_line("echo hello-$((6*7))")
    serial.wait_for("hello-42", timeout=30)


def test_hot_added_cpu_comes_online(serial_guest: tuple[Guest, SerialSocket, Path]) -> None:
    _, serial, qmp = serial_guest
    serial.wait_for("VIRTFLEET-READY hostname=vm1 cpus=1")
    slots = _qmp(qmp, "query-hotpluggable-cpus")["return"]
    assert isinstance(slots, list)
    free = next(slot for slot in slots if "qom-path" not in slot)
    args = {"driver": free["type"], "id": "cpu1", **free["props"]}
    assert "return" in _qmp(qmp, "device_add", args)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        serial.type_line("echo cpus-online=$(cat /sys/devices/system/cpu/online)")
        time.sleep(1)
        if "cpus-online=0-1" in serial.text():
            return
    pytest.fail(f"hot-added CPU did not come online:\n{serial.text()[-2000:]}")
