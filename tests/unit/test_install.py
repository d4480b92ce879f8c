"""``virtfleet install``/``uninstall`` into a temporary root, and the systemd unit checked
with ``systemd-analyze verify`` (systemd is not PID 1 here: nothing is started)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from virtfleet.app.install import Layout, unit_text
from virtfleet.cli.main import app

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    """The unit, pointing at an existing program, verifies without a single complaint, and
    keeps guests alive across daemon restarts (KillMode=process)."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    layout = Layout(Path("/"), prefix=tmp_path / "opt", data_dir=tmp_path / "data")
    program = tmp_path / "opt" / "venv" / "bin" / "virtfleet"
    program.parent.mkdir(parents=True)
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    unit = tmp_path / "virtfleet.service"
    text = unit_text(layout)
    unit.write_text(text)
    done = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    assert (done.returncode, done.stdout + done.stderr) == (0, "")
    for line in ("KillMode=process", "Restart=on-failure", "Delegate=yes",
                 "After=network-online.target local-fs.target"):  # fmt: skip
        assert line in text.splitlines()
    assert "--only-at-system-shutdown" in text
    # What would break QEMU: W^X (TCG), a device allow-list (/dev/kvm, /dev/net/tun).
    breaking = ("MemoryDenyWriteExecute=", "PrivateDevices=", "ProtectClock=", "DeviceAllow=")
    assert not [line for line in text.splitlines() if line.startswith(breaking)]


def test_install_and_uninstall_into_a_root(tmp_path: Path) -> None:
    """install builds the wheel into its own venv, puts down unit, logrotate, the command
    link and a 0700 data dir, and enables the unit; uninstall keeps the data, --purge not."""
    root = tmp_path / "root"
    result = runner.invoke(app, ["install", "--root", str(root), "--source", str(ROOT),
                                 "--no-deps", "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "/etc/systemd/system/virtfleet.service" in json.loads(result.stdout)["installed"]
    venv = root / "opt/virtfleet/venv"
    ask = "import importlib.metadata as m; print(m.version('virtfleet'))"
    version = subprocess.run(
        [str(venv / "bin/python"), "-c", ask], capture_output=True, text=True, check=True
    ).stdout
    assert version.strip() == "0.1.0"
    assert (root / "usr/local/bin/virtfleet").readlink() == Path(
        "/opt/virtfleet/venv/bin/virtfleet"
    )
    assert "KillMode=process" in (root / "etc/systemd/system/virtfleet.service").read_text()
    assert "copytruncate" in (root / "etc/logrotate.d/virtfleet").read_text()
    data = root / "var/lib/virtfleet"
    assert data.stat().st_mode & 0o777 == 0o700
    if shutil.which("systemctl"):
        assert (root / "etc/systemd/system/multi-user.target.wants/virtfleet.service").is_symlink()
    (data / "virtfleet.db").write_text("keep me")
    result = runner.invoke(app, ["uninstall", "--root", str(root), "--json"])
    assert result.exit_code == 0, result.output
    assert not (root / "opt/virtfleet").exists() and not (root / "usr/local/bin/virtfleet").exists()
    assert not (root / "etc/systemd/system/virtfleet.service").exists()
    assert not (root / "etc/systemd/system/multi-user.target.wants/virtfleet.service").exists()
    assert (data / "virtfleet.db").read_text() == "keep me"
    result = runner.invoke(app, ["uninstall", "--root", str(root), "--purge", "--json"])
    assert json.loads(result.stdout)["removed"] == ["/var/lib/virtfleet"] and not data.exists()


def test_install_refuses_a_non_source_tree(tmp_path: Path) -> None:
    """A --source without pyproject.toml: one-line invalid_input, nothing put down."""
    result = runner.invoke(
        app, ["install", "--root", str(tmp_path / "r"), "--source", str(tmp_path)]
    )
    assert result.exit_code != 0 and "invalid_input" in result.output
    assert not (tmp_path / "r").exists()
