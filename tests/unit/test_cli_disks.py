"""``virtfleet disk ...`` and ``vm create --reuse-disks`` against the in-process daemon:
a re-created name is refused with one line naming the kept disks, exit non-zero."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from tests.functional.platform import serve_uds
from virtfleet.cli.main import app

runner = CliRunner()


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    with serve_uds(tmp_path) as d:
        assert cli(d, "image", "build", "tiny").exit_code == 0
        yield d


def cli(data_dir: Path, *args: str) -> Result:
    return runner.invoke(app, ["--data-dir", str(data_dir), *args])


def ok(data_dir: Path, *args: str) -> Result:
    result = cli(data_dir, *args)
    assert result.exit_code == 0, result.output
    return result


def test_kept_disks_refuse_then_reuse_list_and_delete(data_dir: Path) -> None:
    ok(data_dir, "vm", "create", "web", "--image", "tiny", "--start")
    ok(data_dir, "vm", "stop", "web", "--force")
    ok(data_dir, "vm", "delete", "web")

    refused = cli(data_dir, "vm", "create", "web", "--image", "tiny")
    assert refused.exit_code != 0
    line = refused.output.strip()
    assert "\n" not in line and line.endswith("[kept_disks]") and "root.qcow2" in line

    listed = json.loads(ok(data_dir, "disk", "list", "--orphaned", "--json").stdout)
    assert [(d["name"], d["files"], d["orphaned"]) for d in listed] == [
        ("web", ["root.qcow2"], True)
    ]
    table = ok(data_dir, "disk", "list").stdout
    assert "web" in table and "kept" in table

    ok(data_dir, "vm", "create", "web", "--image", "tiny", "--reuse-disks", "--start")
    assert json.loads(ok(data_dir, "disk", "list", "--orphaned", "--json").stdout) == []
    busy = cli(data_dir, "disk", "delete", "web")
    assert busy.exit_code != 0 and "[in_use]" in busy.output

    ok(data_dir, "vm", "stop", "web", "--force")
    ok(data_dir, "vm", "delete", "web")
    result = json.loads(ok(data_dir, "disk", "delete", "web", "--json").stdout)
    assert result == {"name": "web", "deleted": True}
    assert "no kept disks" in ok(data_dir, "disk", "delete", "web").stdout
    ok(data_dir, "vm", "create", "web", "--image", "tiny")


def test_reuse_disks_is_not_for_clones(data_dir: Path) -> None:
    result = cli(data_dir, "vm", "create", "a", "--from", "tpl", "--reuse-disks")
    assert result.exit_code == 2 and "[invalid_input]" in result.output
