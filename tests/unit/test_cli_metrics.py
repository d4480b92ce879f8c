"""``virtfleet top|metrics|report|alert`` against the in-process daemon (fake driver)."""

from __future__ import annotations

import json
import time
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


def _first_round(data_dir: Path) -> dict[str, object]:
    """The collector's first round runs as the daemon starts: wait for it."""
    for _ in range(100):
        data = json.loads(cli(data_dir, "top", "--json").stdout)
        if data["host"] is not None:
            return dict(data)
        time.sleep(0.05)
    raise AssertionError("no metrics round within 5 s")


def test_top_metrics_and_report(data_dir: Path) -> None:
    """top --json prints one round, --once a table; metrics and report print tables or JSON."""
    data = _first_round(data_dir)
    assert data["instances"] == [] and data["host"]["cpus"] >= 1  # type: ignore[index]
    assert "NAME" in cli(data_dir, "top", "--once").stdout
    cli(data_dir, "image", "build", "tiny")
    assert cli(data_dir, "vm", "create", "t1", "--image", "tiny").exit_code == 0
    shown = json.loads(cli(data_dir, "metrics", "t1", "--range", "15m", "--json").stdout)
    assert shown["history"]["range_s"] == 900
    assert "METRIC" in cli(data_dir, "metrics", "t1").stdout
    bad = cli(data_dir, "metrics", "t1", "--range", "forever")
    assert bad.exit_code == 2 and bad.stderr.strip().endswith("[invalid_input]")
    missing = cli(data_dir, "metrics", "nope")
    assert missing.exit_code == 1 and "[not_found]" in missing.stderr
    report = json.loads(cli(data_dir, "report", "--window", "1h", "--json").stdout)
    assert report["host_cpus"] == 4 and report["window_s"] == 3600
    assert "consolidation" in cli(data_dir, "report").stdout


def test_alert_commands(data_dir: Path) -> None:
    """Rules are listed, set, overridden and deleted; silences made; alerts listed."""
    rules = json.loads(cli(data_dir, "alert", "rules", "--json").stdout)
    assert {r["name"] for r in rules} >= {"host-memory-low", "instance-crashed"}
    assert "CONDITION" in cli(data_dir, "alert", "rules").stdout
    made = cli(data_dir, "alert", "set", "hot", "--metric", "cpu_pct", "--threshold", "90")
    assert made.exit_code == 0 and "cpu_pct > 90" in made.stdout
    bad = cli(data_dir, "alert", "set", "hot", "--metric", "cpu_pct", "--op", "!=")
    assert bad.exit_code == 2 and "[invalid_input]" in bad.stderr
    unknown = cli(data_dir, "alert", "set", "hot", "--metric", "cpu_percent", "--threshold", "9")
    assert unknown.exit_code == 2 and "unknown metric 'cpu_percent'" in unknown.stderr
    for host_metric in ("memory_available_pct", "pressure_cpu_some_avg10"):
        on_host = ("--target", "host", "--metric", host_metric, "--threshold", "1")
        assert cli(data_dir, "alert", "set", "h", *on_host).exit_code == 0
    override = cli(
        data_dir,
        "alert",
        "set",
        "host-memory-low",
        "--metric",
        "memory_available_pct",
        "--op",
        "<",
        "--threshold",
        "5",
        "--target",
        "host",
        "--json",
    )
    assert json.loads(override.stdout)["builtin"] is False
    silenced = cli(data_dir, "alert", "silence", "hot", "--for", "60")
    assert silenced.exit_code == 0 and "silenced until" in silenced.stdout
    assert cli(data_dir, "alert", "delete", "hot").exit_code == 0
    restored = cli(data_dir, "alert", "delete", "host-memory-low", "--json")
    assert json.loads(restored.stdout)["restored_default"] is True
    assert cli(data_dir, "alert", "list", "--all").exit_code == 0
    unknown = cli(data_dir, "alert", "silence", "nope")
    assert unknown.exit_code == 1 and "[not_found]" in unknown.stderr
