"""``virtfleet vm set`` / ``vm resources`` / ``host capacity`` against the in-process daemon."""

from __future__ import annotations

from pathlib import Path

import pytest

from .test_cli_vm import cli, cli_json, data_dir, image  # noqa: F401 - fixtures

CREATE = ("vm", "create", "demo", "--image", "tiny", "--memory", "512M", "--max-memory", "1G")


@pytest.fixture
def running(data_dir: Path, image: str) -> Path:  # noqa: F811
    result = cli(data_dir, *CREATE, "--max-vcpus", "4", "--min-memory", "256M", "--start")
    assert result.exit_code == 0, result.output
    return data_dir


def test_set_changes_live_and_says_so(running: Path) -> None:
    """Memory, vCPUs, a CPU cap, a new throttled disk and a NIC in one command, all live."""
    op = cli_json(
        running,
        "vm", "set", "demo", "--memory", "768M", "--vcpus", "2", "--cpu-limit", "50%",
        "--disk-add", "data:64M", "--nic-add", "extra",
    )  # fmt: skip
    assert isinstance(op, dict) and op["status"] == "success"
    assert {c["target"]: c["mode"] for c in op["result"]["changes"]} == {
        "memory_mib": "live", "vcpus": "live", "cpu_limit_pct": "live",
        "data": "live", "extra": "live",
    }  # fmt: skip
    op = cli_json(
        running, "vm", "set", "demo", "--iops", "data:read=100,write=50", "--bps", "data:10M"
    )
    assert isinstance(op, dict)
    shown = cli_json(running, "vm", "show", "demo")
    assert isinstance(shown, dict)
    data = next(d for d in shown["spec"]["disks"] if d["name"] == "data")
    assert data["limits"] == {
        "iops_total": None, "iops_read": 100, "iops_write": 50,
        "bps_total": 10 * 2**20, "bps_read": None, "bps_write": None,
    }  # fmt: skip
    text = cli(running, "vm", "set", "demo", "--max-memory", "2G").stdout
    assert "at next boot" in text and "max_memory_mib" in text
    assert "pending max_memory_mib" in cli(running, "vm", "show", "demo").stdout


def test_a_disk_added_and_throttled_in_one_command(running: Path) -> None:
    op = cli_json(running, "vm", "set", "demo", "--disk-add", "fast:64M", "--iops", "fast:200")
    assert isinstance(op, dict) and op["status"] == "success", op
    shown = cli_json(running, "vm", "show", "demo")
    assert isinstance(shown, dict)
    fast = next(d for d in shown["spec"]["disks"] if d["name"] == "fast")
    assert fast["limits"]["iops_total"] == 200


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("--cpu-limit", "0%"), "above 0"),
        (("--disk-grow", "root"), "NAME:VALUE"),
        (("--iops", "nope:5"), "no disk 'nope'"),
        (("--bps", "root:read=0"), "above 0"),
        (("--memory", "2G"), "above the maximum"),
        ((), "nothing to change"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(running: Path, args: tuple[str, ...], words: str) -> None:
    """Bad values fail before or at the API with a one-line error and exit status 2."""
    result = cli(running, "vm", "set", "demo", *args)
    assert result.exit_code == 2, result.output
    assert words in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_resources_and_capacity(running: Path) -> None:
    """``vm resources`` shows the live balloon; ``host capacity`` counts the running VM."""
    live = cli_json(running, "vm", "resources", "demo")
    assert isinstance(live, dict) and live["live"]["balloon_actual_mib"] == 512
    cap = cli_json(running, "host", "capacity")
    assert isinstance(cap, dict) and cap["allocated_memory_mib"] == 512
    assert "memory allocated" in cli(running, "host", "capacity").stdout
