"""The CLI's lazy command tree (cli/lazy.py, cli/main.py) and Typer coercion without
pydantic (cli/coercion.py): listed help is the commands' own, listing builds nothing,
running builds only what runs, and the short-cut coercion gives Typer's results."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import typer
from typer._click import Context
from typer._click.exceptions import BadParameter
from typer._click.utils import make_default_short_help
from typer._coercion import build_runtime_param, resolve_type_descriptor
from typer.main import get_command
from typer.models import ArgumentInfo, OptionInfo
from typer.testing import CliRunner

from virtfleet.cli import vm
from virtfleet.cli.coercion import FastRuntimeParam, fast_runtime_param
from virtfleet.cli.lazy import LazyGroup, lazy_group
from virtfleet.cli.main import TOP_LEVEL, app, load


@pytest.mark.parametrize("name", list(TOP_LEVEL))
def test_listed_help_is_the_commands_own(name: str) -> None:
    """``--help`` and completion show TOP_LEVEL's line; it must be what the command says."""
    cmd = load(name)
    assert cmd.name == name
    for limit in (30, 45, 70, 200):
        assert make_default_short_help(TOP_LEVEL[name][2], limit) == cmd.get_short_help_str(limit)


def _root() -> LazyGroup:
    group = get_command(app)
    assert isinstance(group, LazyGroup)
    return group


def test_help_and_completion_build_no_command() -> None:
    root = _root()
    ctx = root.make_context("virtfleet", ["--help"], resilient_parsing=True)
    text = root.get_help(ctx)
    assert all(f"  {name} " in text for name in TOP_LEVEL)
    items = root.shell_complete(ctx, "st")
    assert [(i.value, i.help) for i in items] == [
        ("start", "Start a stopped instance."),
        ("stop", "Stop an instance cleanly, then hard after..."),
        ("storage", "Storage pools and their volumes."),
    ]
    assert root.lazy.loaded == []


def test_running_a_command_builds_only_its_path() -> None:
    """``vm start`` builds the vm group and its start command, nothing else."""
    root = _root()
    ctx = root.make_context("virtfleet", ["vm", "start", "x"])
    group = root.get_command(ctx, "vm")
    assert isinstance(group, LazyGroup) and root.lazy.loaded == ["vm"]
    assert "snapshot" in group.list_commands(ctx) and group.lazy.loaded == []
    start = group.get_command(ctx, "start")
    assert start is not None and start.params[0].name == "name"
    assert group.lazy.loaded == ["start"]


def test_a_nested_group_is_lazy_too() -> None:
    group = lazy_group(vm.app, "vm")
    ctx = Context(group)
    snapshot = group.get_command(ctx, "snapshot")
    assert isinstance(snapshot, LazyGroup) and snapshot.lazy.loaded == []
    assert "revert" in snapshot.list_commands(ctx)


def test_a_typo_still_gets_a_suggestion() -> None:
    """Typer's "did you mean" reads the names, which include commands not built yet."""
    result = CliRunner().invoke(app, ["strat", "c1"])
    assert result.exit_code == 2 and "Did you mean 'start'" in result.output


CASES: list[tuple[Any, Any, Any]] = [
    (str, OptionInfo(), "c1"),
    (int, OptionInfo(), 5),
    (float, OptionInfo(), 60),
    (float, OptionInfo(), 2.5),
    (int, OptionInfo(), 2.0),
    (Path, OptionInfo(), "/tmp"),
    (Path, OptionInfo(), "no/such/dir"),
    (list[str], ArgumentInfo(), ("true", "-x")),
    (int, OptionInfo(), "7"),  # a string to parse: Typer's adapter
    (int, OptionInfo(), "seven"),
    (float, OptionInfo(min=0.5), 0.2),
    (int, OptionInfo(), 2.5),
]


@pytest.mark.parametrize(("annotation", "info", "value"), CASES)
def test_short_cut_coercion_gives_typers_result(annotation: Any, info: Any, value: Any) -> None:
    """Same value (and type), or the same error, as Typer's own pydantic coercion."""
    desc = resolve_type_descriptor(annotation, info)
    fast, theirs = fast_runtime_param(desc), build_runtime_param(desc)
    assert isinstance(fast, FastRuntimeParam)
    ctx = Context(typer.main.get_command(app))
    param = None  # the parameter only names itself in Typer's messages
    try:
        expected = theirs._coerce_value(value, param=param, ctx=ctx)  # type: ignore[arg-type]
    except BadParameter as err:
        with pytest.raises(BadParameter) as mine:
            fast._coerce_value(value, param=param, ctx=ctx)  # type: ignore[arg-type]
        assert mine.value.format_message() == err.format_message()
        return
    got = fast._coerce_value(value, param=param, ctx=ctx)  # type: ignore[arg-type]
    assert (got, type(got)) == (expected, type(expected))
