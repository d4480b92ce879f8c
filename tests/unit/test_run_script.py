"""``make run`` (scripts/run.sh) keeps the one-time admin password out of its log and of
any output that is not a terminal, and keeps its log private.

The script runs from a scratch copy of the repository whose ``.venv/bin/virtfleet`` is a
stub: ``serve`` writes the 0600 password file as the daemon does and stays up; the other
commands answer as a running daemon with a booted ``demo`` would.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "one-time-Pa55word-x9"
STUB = f"""#!/bin/bash
d=$2; shift 2
case "$1 $2" in
  "serve "*)
    printf '%s\\n' "{PASSWORD}" >"$d/initial-admin-password"; chmod 600 "$d/initial-admin-password"
    echo "virtfleet: API on unix:$d/api.sock (local root, no password)"
    echo "virtfleet: API on http://127.0.0.1:8006"
    touch "$d/started"; exec sleep 60 ;;
  "vm list") [ -f "$d/started" ] || exit 1; echo "demo running" ;;
  "vm show") echo '{{"status": {{"power": "running"}}}}' ;;
  "vm logs") echo VIRTFLEET-READY ;;
esac
exit 0
"""


def _scratch_repo(tmp: Path) -> Path:
    repo = tmp / "repo"
    (repo / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "run.sh", repo / "scripts" / "run.sh")
    bin_dir = repo / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "virtfleet").write_text(STUB)
    (bin_dir / "virtfleet").chmod(0o755)
    (bin_dir / "python").symlink_to(sys.executable)
    return repo


def test_make_run_keeps_the_password_out_of_logs_and_pipes(tmp_path: Path) -> None:
    """A log left 0644 by an older run becomes 0600; the output (a pipe here) names the
    password file but never prints the password; neither does the log."""
    repo = _scratch_repo(tmp_path)
    data = tmp_path / "data"
    data.mkdir()
    (data / "virtfleet.log").write_text("an older run\n")
    (data / "virtfleet.log").chmod(0o644)
    env = {k: v for k, v in os.environ.items() if k != "VIRTFLEET_ADMIN_PASSWORD"}
    script = str(repo / "scripts" / "run.sh")
    try:
        run = subprocess.run(
            ["bash", script, str(data)], capture_output=True, text=True, timeout=60, env=env
        )
        assert run.returncode == 0, run.stdout + run.stderr
        assert PASSWORD not in run.stdout + run.stderr
        assert str(data / "initial-admin-password") in run.stdout
        log = data / "virtfleet.log"
        assert stat.S_IMODE(log.stat().st_mode) == 0o600
        assert PASSWORD not in log.read_text()
    finally:
        subprocess.run(["bash", script, str(data), "--stop"], timeout=30, check=False)
