"""The serial console of a real guest: interactive CLI over a pty, and the log command."""

from __future__ import annotations

import os
import subprocess

import pytest

from .conftest import VIRTFLEET, Daemon, in_pty, read_until

pytestmark = pytest.mark.integration


def test_interactive_console_and_detach(daemon: Daemon) -> None:
    """`vm console` runs commands in the guest's shell and Ctrl-] detaches, exit status 0."""
    daemon.create("con")
    daemon.wait_marker("con")
    proc, leader = in_pty([VIRTFLEET, "--data-dir", str(daemon.data_dir), "vm", "console", "con"])
    try:
        assert b"detach with Ctrl-]" in read_until(leader, b"Ctrl-]", 20)
        seen = b""
        for _ in range(3):  # a loaded TCG guest can drop typed input before its prompt is up
            os.write(leader, b"\recho console-$((6*7))\r")
            seen += read_until(leader, b"console-42", 20)
            if b"console-42" in seen:
                break
        assert b"console-42" in seen, seen
        os.write(leader, b"\x1d")
        assert proc.wait(10) == 0
    finally:
        proc.kill()
        os.close(leader)
    # The guest survived the session: a second attach works too.
    assert daemon.client.get_instance("con").status.power == "running"


def test_logs_print_serial_history(daemon: Daemon) -> None:
    """`vm logs` prints the serial log, boot marker included, even with no client attached."""
    daemon.create("lg")
    daemon.wait_marker("lg")
    out = subprocess.run(
        [VIRTFLEET, "--data-dir", str(daemon.data_dir), "vm", "logs", "lg"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    assert "VIRTFLEET-READY hostname=lg" in out
