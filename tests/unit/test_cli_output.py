"""Values the CLI prints are shown as they are: never read as Rich markup or emoji."""

from __future__ import annotations

import pytest

from virtfleet.cli import output

VALUES = ["52:54:00:ab:73:f3", "a[/]b", "[red]x[/red]", ":smile:"]


def test_table_cells_are_printed_verbatim(capsys: pytest.CaptureFixture[str]) -> None:
    output.table(["value"], [[v] for v in VALUES])
    printed = capsys.readouterr().out
    assert all(v in printed for v in VALUES), printed


def test_fields_are_printed_verbatim(capsys: pytest.CaptureFixture[str]) -> None:
    output.fields([(f"k{i}", v) for i, v in enumerate(VALUES)])
    printed = capsys.readouterr().out
    assert all(v in printed for v in VALUES), printed
