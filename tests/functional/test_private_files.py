"""Secrets stay private on disk: the data directory and everything the daemon writes in it
are its user's alone, and the one-time admin password reaches a terminal, never a log.

A real ``virtfleet serve`` (fake driver, SQLite store) is started the way ``make run``
starts it: stderr appended to ``<data-dir>/virtfleet.log``, which an older run left
world-readable in a world-readable data directory.
"""

from __future__ import annotations

import contextlib
import io
import os
import pty
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from virtfleet.app.datadir import secure_data_dir
from virtfleet.app.firstrun import PASSWORD_FILE, ensure_admin
from virtfleet.client import Client
from virtfleet.client.errors import DaemonUnavailableError
from virtfleet.errors import ConflictError

from .platform import make_platform

VIRTFLEET = str(Path(sys.executable).parent / "virtfleet")


def _modes(root: Path) -> dict[str, int]:
    """Permission bits of ``root`` and everything under it (symlinks not followed)."""
    found = {".": stat.S_IMODE(os.lstat(root).st_mode)}
    for path in root.rglob("*"):
        st = os.lstat(path)
        if not stat.S_ISLNK(st.st_mode):
            found[str(path.relative_to(root))] = stat.S_IMODE(st.st_mode)
    return found


def _wait_serving(sock: Path, proc: subprocess.Popen[bytes], timeout_s: float = 30) -> None:
    """Until the daemon answers on ``sock`` (its start-up is done then)."""
    deadline = time.monotonic() + timeout_s
    while True:
        assert proc.poll() is None, f"daemon exited with {proc.returncode}"
        with contextlib.suppress(DaemonUnavailableError):
            Client(uds_path=sock).list_instances()
            return
        assert time.monotonic() < deadline, "the daemon did not start serving"
        time.sleep(0.05)


@pytest.fixture
def daemon_dir(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen[bytes]]]:
    """A daemon started like ``make run`` on a data directory an older version left open."""
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    data.chmod(0o755)
    log_path = data / "virtfleet.log"
    log = open(log_path, "ab")  # noqa: SIM115 - handed to the child
    os.chmod(log_path, 0o644)  # what `>>` made under the shell's umask 022
    env = {k: v for k, v in os.environ.items() if k != "VIRTFLEET_ADMIN_PASSWORD"}
    proc = subprocess.Popen(
        [VIRTFLEET, "--data-dir", str(data), "serve", "--driver", "fake", "--listen", "none"],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
        env={**env, "VIRTFLEET_CACHE_DIR": str(tmp_path / "cache")},
        start_new_session=True,
    )
    log.close()
    try:
        _wait_serving(data / "api.sock", proc)
        yield data, proc
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)


def test_nothing_in_the_data_directory_is_open_to_others(
    daemon_dir: tuple[Path, subprocess.Popen[bytes]],
) -> None:
    """After start-up the data directory is 0700 and nothing in it (store, WAL, password
    file, log, socket, run files) has a group or other permission bit."""
    data, _ = daemon_dir
    modes = _modes(data)
    assert modes["."] == 0o700
    assert {"virtfleet.db", "virtfleet.db-wal", PASSWORD_FILE, "virtfleet.log"} <= set(modes)
    open_to_others = {name: oct(mode) for name, mode in modes.items() if mode & 0o077}
    assert open_to_others == {}


def test_the_admin_password_never_reaches_the_log(
    daemon_dir: tuple[Path, subprocess.Popen[bytes]],
) -> None:
    """stderr is a file: the log names the password file, the password is only in that file."""
    data, _ = daemon_dir
    password = (data / PASSWORD_FILE).read_text().strip()
    assert len(password) >= 16
    log = (data / "virtfleet.log").read_text()
    assert str(data / PASSWORD_FILE) in log
    assert password not in log


async def test_the_password_is_shown_on_a_terminal_only(tmp_path: Path) -> None:
    """On a terminal the one-time password is printed; on any other stream it is not."""
    platform, _ = make_platform(tmp_path)
    piped = io.StringIO()
    created = await ensure_admin(platform.services.auth, tmp_path, environ={}, out=piped)
    assert created is not None and created.password not in piped.getvalue()
    other = tmp_path / "again"
    other.mkdir()
    platform, _ = make_platform(other)
    master, slave = pty.openpty()
    with os.fdopen(slave, "w") as terminal:
        created = await ensure_admin(platform.services.auth, other, environ={}, out=terminal)
    assert created is not None
    shown = os.read(master, 65536).decode()
    os.close(master)
    assert created.password in shown and str(other / PASSWORD_FILE) in shown


def test_an_open_data_directory_is_fixed_and_a_foreign_one_refused(tmp_path: Path) -> None:
    """Group/other bits are dropped from the directory and its entries; another user's
    directory is refused rather than changed."""
    data = tmp_path / "d"
    data.mkdir()
    data.chmod(0o755)
    (data / "old.db").write_text("x")
    (data / "old.db").chmod(0o644)
    fixed = secure_data_dir(data)
    assert sorted(p.name for p in fixed) == ["d", "old.db"]
    assert _modes(data) == {".": 0o700, "old.db": 0o600}
    assert secure_data_dir(data) == []
    if os.geteuid() == 0:
        os.chown(data, 12345, 12345)
        with pytest.raises(ConflictError, match="owned by uid 12345"):
            secure_data_dir(data)
