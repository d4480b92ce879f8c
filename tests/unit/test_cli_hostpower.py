"""Start-at-boot flags of ``vm create``/``vm set``/``container create``, ``host boot-report``
and ``host shutdown-guests`` against the in-process daemon."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .test_cli_instances import Fleet, fleet  # noqa: F401 - fixtures
from .test_cli_vm import cli, cli_json, data_dir, image  # noqa: F401 - fixtures


def test_policy_flags_reach_the_spec(data_dir: Path, image: str) -> None:  # noqa: F811
    """--autostart, --start-order, --start-delay and --host-shutdown at create; vm set
    changes them without a pending next-boot change."""
    args = ("--autostart", "--start-order", "3", "--start-delay", "7.5", "--start")
    result = cli(data_dir, "vm", "create", "web", "--image", "tiny", *args)
    assert result.exit_code == 0, result.output
    spec = cli_json(data_dir, "vm", "show", "web")["spec"]  # type: ignore[index]
    assert (spec["autostart"], spec["start_order"], spec["start_delay_s"]) == (True, 3, 7.5)
    op = cli_json(data_dir, "vm", "set", "web", "--no-autostart", "--host-shutdown", "suspend")
    assert isinstance(op, dict) and op["status"] == "success"
    assert op["result"]["changes"] == []  # policy: nothing to apply to the running VM
    shown = cli_json(data_dir, "vm", "show", "web")
    assert isinstance(shown, dict)
    assert (shown["spec"]["autostart"], shown["spec"]["host_shutdown"]) == (False, "suspend")
    assert shown.get("pending", []) == []


def test_bad_policy_is_one_line_error(data_dir: Path, image: str) -> None:  # noqa: F811
    """A negative start order is refused with invalid_input; nothing is created."""
    result = cli(data_dir, "vm", "create", "web", "--image", "tiny", "--start-order", "-1")
    assert result.exit_code != 0 and "invalid_input" in result.output
    assert cli_json(data_dir, "list") == []


def test_boot_report_and_shutdown_guests(data_dir: Path, image: str) -> None:  # noqa: F811
    """boot-report shows the daemon's first start; shutdown-guests stops what runs, the
    highest start order first."""
    for name, order in (("a", "1"), ("b", "2")):
        assert cli(data_dir, "vm", "create", name, "--image", "tiny", "--start-order", order,
                   "--start").exit_code == 0  # fmt: skip
    report = cli_json(data_dir, "host", "boot-report")
    assert isinstance(report, dict) and report["new_boot"] is False and report["entries"] == []
    assert "new boot" in cli(data_dir, "host", "boot-report").stdout
    op = cli_json(data_dir, "host", "shutdown-guests", "--timeout", "5")
    assert isinstance(op, dict) and op["status"] == "success"
    assert [(g["name"], g["outcome"]) for g in op["result"]["guests"]] == [
        ("b", "stopped"),
        ("a", "stopped"),
    ]
    states = {i["name"]: i["status"]["power"] for i in cli_json(data_dir, "list")}  # type: ignore[union-attr, index]
    assert states == {"a": "stopped", "b": "stopped"}


def _fake_systemctl(bin_dir: Path, jobs: str) -> None:
    """A ``systemctl`` whose ``list-jobs`` prints ``jobs``."""
    bin_dir.mkdir(exist_ok=True)
    tool = bin_dir / "systemctl"
    tool.write_text(f"#!/bin/sh\nprintf '{jobs}'\n")
    tool.chmod(0o755)


def test_unit_stop_shuts_guests_down_only_at_system_shutdown(
    data_dir: Path,  # noqa: F811
    image: str,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """--only-at-system-shutdown (the unit's ExecStop) leaves guests running on a plain
    service stop or restart, and stops them when a reboot job is queued."""
    assert cli(data_dir, "vm", "create", "a", "--image", "tiny", "--start").exit_code == 0
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    _fake_systemctl(tmp_path / "bin", "")
    out = cli_json(data_dir, "host", "shutdown-guests", "--only-at-system-shutdown")
    assert out == {"skipped": "the system is not shutting down"}
    assert cli_json(data_dir, "show", "a")["status"]["power"] == "running"  # type: ignore[index]
    _fake_systemctl(tmp_path / "bin", "1 reboot.target start waiting\\n")
    op = cli_json(data_dir, "host", "shutdown-guests", "--only-at-system-shutdown")
    assert isinstance(op, dict) and op["result"]["guests"][0]["outcome"] == "stopped"
    assert cli_json(data_dir, "show", "a")["status"]["power"] == "stopped"  # type: ignore[index]


def test_container_boot_policy(fleet: Fleet) -> None:  # noqa: F811
    """container create takes the start-at-boot flags; vm set changes a container's too."""
    fleet.ok("container", "create", "c2", "--image", "ctiny", "--autostart", "--start-order", "2")
    spec = fleet.json("show", "c2")["spec"]  # type: ignore[index]
    assert (spec["autostart"], spec["start_order"]) == (True, 2)
    fleet.ok("vm", "set", "c1", "--autostart", "--start-delay", "4")
    spec = fleet.json("show", "c1")["spec"]  # type: ignore[index]
    assert (spec["autostart"], spec["start_delay_s"]) == (True, 4.0)
