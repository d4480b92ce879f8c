"""``virtfleet template ...`` and ``vm create NAME... --from`` against the in-process daemon."""

from __future__ import annotations

from pathlib import Path

from tests.unit.test_cli_vm import cli, cli_json, data_dir

__all__ = ["data_dir"]  # the fixture, shared with test_cli_vm


def test_cli_vm_create_from_template(data_dir: Path) -> None:
    """``vm create 'web-{1..2}' --from tpl --full --json`` prints the finished operation."""
    assert cli(data_dir, "image", "build", "tiny").exit_code == 0
    made = cli(data_dir, "template", "create", "tpl", "--from-image", "tiny")
    assert made.exit_code == 0, made.output
    op = cli_json(data_dir, "vm", "create", "web-{1..2}", "--from", "tpl", "--full")
    assert isinstance(op, dict) and op["result"]["instances"] == ["web-1", "web-2"]
    assert "tpl" in cli(data_dir, "template", "list").stdout
    listed = cli_json(data_dir, "image", "list")
    assert isinstance(listed, list) and {i["kind"] for i in listed} == {"image", "template"}
    wrong = cli(data_dir, "vm", "create", "a", "b", "--image", "tiny")
    assert wrong.exit_code != 0 and "--from" in wrong.output
