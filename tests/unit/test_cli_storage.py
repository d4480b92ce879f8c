"""``virtfleet storage pool|volume ...`` and ``vm create --disk NAME:SIZE@POOL`` against
the in-process daemon (fake driver) on its Unix socket."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from tests.functional.platform import serve_uds
from virtfleet.cli.main import app
from virtfleet.cli.sizes import parse_disk

runner = CliRunner()


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    (tmp_path / "data").mkdir()  # pools go beside it: never inside the data dir
    with serve_uds(tmp_path / "data") as d:
        yield d


def cli(data_dir: Path, *args: str) -> Result:
    return runner.invoke(app, ["--data-dir", str(data_dir), *args], env={"COLUMNS": "200"})


def cli_json(data_dir: Path, *args: str) -> object:
    result = cli(data_dir, *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_parse_disk() -> None:
    assert parse_disk("root:20G@fast") == {"name": "root", "size_gib": 20.0, "pool": "fast"}
    assert parse_disk("data:512M") == {"name": "data", "size_gib": 0.5}
    assert parse_disk("data@fast") == {"name": "data", "pool": "fast"}
    for bad in ("", "root:", "root@", ":1G", "root:big"):
        with pytest.raises(ValueError):
            parse_disk(bad)


def test_pool_and_volume_commands(data_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "shared").mkdir()
    made = cli_json(
        data_dir, "storage", "pool", "create", "fast", "--type", "shared-dir",
        "--path", str(tmp_path / "shared"), "--overcommit", "3",
    )  # fmt: skip
    assert isinstance(made, dict) and made["capabilities"]["shared"]
    listed = cli(data_dir, "storage", "pool", "list").stdout
    assert "fast" in listed and "shared-dir" in listed and "local" in listed
    assert "live_migrate_without_copy" in cli(data_dir, "storage", "pool", "show", "fast").stdout
    assert cli(data_dir, "image", "build", "tiny").exit_code == 0
    created = cli(data_dir, "vm", "create", "web", "--image", "tiny", "--disk", "root:2G@fast")
    assert created.exit_code == 0, created.output
    vm = cli_json(data_dir, "vm", "show", "web")
    assert isinstance(vm, dict)
    [disk] = vm["spec"]["disks"]
    assert (disk["pool"], disk["size_gib"], disk["image"]) == ("fast", 2.0, "tiny")
    assert cli(data_dir, "vm", "create", "db", "--image", "tiny", "--pool", "fast").exit_code == 0
    db = cli_json(data_dir, "vm", "show", "db")
    assert isinstance(db, dict)
    assert [(d["name"], d["pool"], d["image"]) for d in db["spec"]["disks"]] == [
        ("root", "fast", "tiny")
    ]
    assert cli(data_dir, "vm", "delete", "db").exit_code == 0
    vols = cli_json(data_dir, "storage", "volume", "list", "fast")
    assert isinstance(vols, list) and [v["name"] for v in vols] == ["web/root"]
    shown = cli_json(data_dir, "storage", "volume", "show", "fast", "web/root")
    assert isinstance(shown, dict) and shown["size_bytes"] == 2 << 30
    busy = cli(data_dir, "storage", "pool", "delete", "fast")
    assert busy.exit_code != 0 and "[in_use]" in busy.output and "web/root" in busy.output
    assert len(busy.output.strip().splitlines()) == 1
    assert cli(data_dir, "vm", "delete", "web").exit_code == 0
    gone = cli_json(data_dir, "storage", "pool", "delete", "fast")
    assert gone == {"name": "fast", "deleted": True}


def test_bad_pool_input_is_one_line_with_a_code(data_dir: Path) -> None:
    bad = cli(data_dir, "storage", "pool", "create", "p", "--type", "dir", "--path", "rel")
    assert bad.exit_code != 0 and "[invalid_input]" in bad.output
    assert len(bad.output.strip().splitlines()) == 1
    worse = cli(data_dir, "vm", "create", "x", "--image", "tiny", "--disk", "root:@")
    assert worse.exit_code != 0 and "--disk" in worse.output
