"""``virtfleet vm console``: keys go to the serial socket, Ctrl-] detaches, refusals are errors."""

from __future__ import annotations

import os
import socket
import sys
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.functional.platform import serve_uds
from virtfleet.cli.console import attach
from virtfleet.cli.main import app
from virtfleet.client import ApiError, Client, api_socket


def serial_sink(path: Path, received: list[bytes]) -> threading.Thread:
    """A one-client Unix socket (like QEMU's chardev) that records what it receives."""
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen(1)

    def serve() -> None:
        conn, _ = server.accept()
        with conn, server:
            while data := conn.recv(1024):
                received.append(data)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


def start_demo(data_dir: Path) -> None:
    runner = CliRunner()
    for args in (
        ["image", "build", "tiny"],
        ["vm", "create", "demo", "--image", "tiny", "--start"],
    ):
        assert runner.invoke(app, ["--data-dir", str(data_dir), *args]).exit_code == 0


def test_keys_reach_the_console_and_ctrl_bracket_detaches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Typed bytes before Ctrl-] are sent; Ctrl-] itself is not, and ends the session."""
    with serve_uds(tmp_path) as data_dir:
        start_demo(data_dir)
        received: list[bytes] = []
        sink = serial_sink(data_dir / "console" / "demo.sock", received)
        read_end, write_end = os.pipe()
        os.write(write_end, b"root\r\x1dignored")
        monkeypatch.setattr(sys, "stdin", os.fdopen(read_end, "rb", buffering=0))
        attach(Client(uds_path=api_socket(data_dir)), "demo")
        sink.join(5)
        os.close(write_end)
    assert b"".join(received) == b"root\r"
    err = capsys.readouterr().err
    assert "Connected to demo's serial console; detach with Ctrl-]" in err
    assert "detached from demo" in err


def test_console_of_a_stopped_vm_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A console the daemon refuses raises the ApiError its close code and reason carry."""
    with serve_uds(tmp_path) as data_dir:
        runner = CliRunner()
        runner.invoke(app, ["--data-dir", str(data_dir), "image", "build", "tiny"])
        runner.invoke(app, ["--data-dir", str(data_dir), "vm", "create", "demo", "--image", "tiny"])
        read_end, write_end = os.pipe()
        monkeypatch.setattr(sys, "stdin", os.fdopen(read_end, "rb", buffering=0))
        with pytest.raises(ApiError) as info:
            attach(Client(uds_path=api_socket(data_dir)), "demo")
        os.close(write_end)
    assert info.value.code == "conflict" and "no serial console" in info.value.message


def test_console_errors_through_the_cli(tmp_path: Path) -> None:
    """An unknown VM exits 1 with not_found; no daemon names the socket."""
    with serve_uds(tmp_path) as data_dir:
        result = CliRunner().invoke(app, ["--data-dir", str(data_dir), "vm", "console", "ghost"])
        assert result.exit_code == 1
        assert result.stderr.startswith("error: instance 'ghost' not found [not_found]")
    with pytest.raises(ApiError) as info:
        attach(Client(uds_path=tmp_path / "nowhere.sock"), "demo")
    assert info.value.code == "daemon_unavailable"
