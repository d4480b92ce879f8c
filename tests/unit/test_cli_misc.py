"""``virtfleet image|host|operation|events`` and finding the daemon."""

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
        yield d


def cli(data_dir: Path, *args: str) -> Result:
    return runner.invoke(app, ["--data-dir", str(data_dir), *args])


def test_image_commands(data_dir: Path) -> None:
    """build, list, show and delete images; a second build without --force exits 1."""
    assert cli(data_dir, "image", "build", "tiny").stdout.strip() == "image tiny built"
    [record] = json.loads(cli(data_dir, "image", "list", "--json").stdout)
    assert record["name"] == "tiny" and record["format"] == "qcow2"
    assert "16.0 MiB" in cli(data_dir, "image", "list").stdout
    assert "sha256" in cli(data_dir, "image", "show", "tiny").stdout
    again = cli(data_dir, "image", "build", "tiny")
    assert again.exit_code == 1 and again.stderr.rstrip().endswith("[already_exists]")
    gone = json.loads(cli(data_dir, "image", "delete", "tiny", "--json").stdout)
    assert gone == {"name": "tiny", "deleted": True}


def test_host_check(data_dir: Path) -> None:
    """``host check`` shows facts and checks; ``--json`` returns both."""
    assert "testhost" in cli(data_dir, "host", "check").stdout
    data = json.loads(cli(data_dir, "host", "check", "--json").stdout)
    assert data["facts"]["cpus"] == 4
    assert {"name", "ok", "level", "detail"} <= set(data["checks"][0])


def test_operations_and_events(data_dir: Path) -> None:
    """Operations are listed and shown; events print as JSON lines with --json."""
    cli(data_dir, "image", "build", "tiny")
    [op] = json.loads(cli(data_dir, "operation", "list", "--json").stdout)
    assert op["kind"] == "image.build" and op["status"] == "success"
    assert op["id"] in cli(data_dir, "operation", "show", op["id"]).stdout
    cancel = cli(data_dir, "operation", "cancel", op["id"])
    assert cancel.exit_code == 1 and "[invalid_state]" in cancel.stderr
    lines = cli(data_dir, "events", "--json").stdout.splitlines()
    assert any(json.loads(line)["kind"] == "image.built" for line in lines)
    assert "image.built" in cli(data_dir, "events").stdout


def test_daemon_not_running_names_the_socket(tmp_path: Path) -> None:
    """Without a daemon the error names <data-dir>/api.sock and suggests ``virtfleet serve``."""
    result = cli(tmp_path, "vm", "list")
    assert result.exit_code == 1
    [line] = result.stderr.splitlines()
    assert str(tmp_path / "api.sock") in line and "virtfleet serve" in line
    assert line.endswith("[daemon_unavailable]")


def test_data_dir_from_the_environment(tmp_path: Path) -> None:
    """VIRTFLEET_DATA_DIR chooses the daemon when --data-dir is not given."""
    result = runner.invoke(app, ["vm", "list"], env={"VIRTFLEET_DATA_DIR": str(tmp_path)})
    assert str(tmp_path / "api.sock") in result.stderr
