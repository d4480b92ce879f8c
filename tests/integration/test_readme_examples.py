"""The README's template and backup examples, run as written through the CLI against a real
daemon: a golden VM, a template of it, three linked clones started together, a full copy,
then a memory snapshot, a backup, its verification, a restore to a new VM beside the
original, pruning and a schedule. The lines are read from README.md, so a README that
changes them changes what runs. Only what this machine cannot have is substituted: the
``tiny`` image for ``debian-12`` (a Debian build and three Debian boots take minutes
here), a directory of the test's for ``/srv/out`` and the real id for ``BACKUP_ID``.
(``test_identity`` boots clones at once; this test need not repeat that.)"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import ROOT, VIRTFLEET, Daemon, module_daemon

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1200)]
TEMPLATES = "### Images, templates, clones, cloud-init"
BACKUPS = "### Snapshots and backups"
FIRST_TEMPLATE_LINE = "virtfleet vm create gold "
FIRST_BACKUP_LINE = "virtfleet vm snapshot create web-1 "


@pytest.fixture(scope="module")
def d(request: pytest.FixtureRequest, tiny_cache: Path) -> Iterator[Daemon]:
    yield from module_daemon(request)


def _block(section: str, first: str) -> list[str]:
    """The commands of the README's first shell block in ``section`` from ``first`` on."""
    text = (ROOT / "README.md").read_text()
    body = text[text.index(section) :]
    block = body[body.index("```sh") + 5 : body.index("```", body.index("```sh") + 5)]
    lines = [line.split("  #")[0].strip() for line in block.splitlines()]
    commands = [line for line in lines if line.startswith("virtfleet ")]
    start = next(i for i, line in enumerate(commands) if line.startswith(first))
    return commands[start:]


def _cli(d: Daemon, line: str, **subst: str) -> str:
    for old, new in subst.items():
        line = line.replace(old, new)
    args = shlex.split(line)[1:]
    proc = subprocess.run(
        [VIRTFLEET, "--data-dir", str(d.data_dir), *args],
        capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.returncode == 0, f"{line}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def _json(d: Daemon, line: str) -> Any:
    return json.loads(_cli(d, f"virtfleet {line} --json"))


def test_template_example_as_written(d: Daemon) -> None:
    """gold -> web-tpl -> web-1..web-3 (linked, started) and db (full), then db exported:
    every clone boots with its own hostname, MAC and UUID."""
    out = d.data_dir / "export"
    out.mkdir(exist_ok=True)  # the daemon makes its export directory itself
    lines = _block(TEMPLATES, FIRST_TEMPLATE_LINE)
    assert [line.split()[1:3] for line in lines] == [
        ["vm", "create"], ["template", "create"], ["vm", "create"], ["vm", "create"],
        ["vm", "show"], ["vm", "export"],
    ], lines  # fmt: skip
    for line in lines:
        _cli(d, line, **{"debian-12": "tiny", "/srv/out": str(out)})
    assert (out / "db.ova").is_file()
    seen = set()
    for i in range(1, 4):
        log = d.wait_marker(f"web-{i}", timeout_s=300)  # three TCG guests boot at once
        ready = re.search(r"VIRTFLEET-READY hostname=(\S+) .* uuid=(\S+) ", log)
        assert ready and ready.group(1) == f"web-web-{i}", log[-500:]
        seen.add(ready.group(2))
    specs = [_json(d, f"vm show web-{i}")["spec"] for i in range(1, 4)]
    assert {s["uuid"] for s in specs} == seen and len(seen) == 3
    assert len({s["nics"][0]["mac"] for s in specs}) == 3


def test_backup_example_as_written(d: Daemon) -> None:
    """Snapshot with memory, backup, verify, restore to a new VM while web-1 runs, prune and
    a schedule, as the README lists them."""
    lines = _block(BACKUPS, FIRST_BACKUP_LINE)
    assert [line.split()[1:3] for line in lines] == [
        ["vm", "snapshot"], ["backup", "create"], ["backup", "verify"], ["backup", "restore"],
        ["backup", "prune"], ["backup", "schedule"],
    ], lines  # fmt: skip
    for line in lines:
        backup_id = ""
        if "BACKUP_ID" in line:
            backup_id = _json(d, "backup list")[0]["id"]
        _cli(d, line, BACKUP_ID=backup_id)
    restored = _json(d, "vm show web-1-restored")
    original = _json(d, "vm show web-1")
    assert restored["status"]["power"] == original["status"]["power"] == "running"
    assert restored["spec"]["nics"][0]["mac"] != original["spec"]["nics"][0]["mac"]
    assert restored["spec"]["uuid"] != original["spec"]["uuid"]
    log = d.wait_marker("web-1-restored", timeout_s=300)
    assert "hostname=web-web-1-restored " in log
    schedules = _json(d, "backup schedule list")
    assert [s["name"] for s in schedules] == ["nightly"]
