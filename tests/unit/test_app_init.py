"""The application containers' init script, run by busybox ash on a terminal as in a
container (its console is a pty: ``script`` gives it one), outside any container."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from virtfleet.drivers.oci.appimage import APP_DIR, BUSYBOX, EXIT_FILE, INIT_SCRIPT

RUNS = int(os.environ.get("APP_INIT_RUNS", "25"))


def test_a_command_that_exits_at_once_keeps_its_exit_code(tmp_path: Path) -> None:
    """A command that exits before the init starts waiting still leaves its code (3) in
    the exit file, every time: with job control left on, ash reported the finished job,
    forgot it, and about one run in five recorded 0."""
    (tmp_path / "busybox").symlink_to(shutil.which("busybox") or BUSYBOX)
    init = tmp_path / "init"
    init.write_text(INIT_SCRIPT.replace(APP_DIR, str(tmp_path)))
    command = f"{BUSYBOX} sh {init} {BUSYBOX} sh -c 'exit 3'"
    codes = []
    for _ in range(RUNS):
        (tmp_path / EXIT_FILE).unlink(missing_ok=True)
        subprocess.run(["script", "-qec", command, "/dev/null"], capture_output=True, timeout=30)
        codes.append((tmp_path / EXIT_FILE).read_text().strip())
    assert codes == ["3"] * RUNS
