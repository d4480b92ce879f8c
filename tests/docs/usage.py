"""Does the CLI know a documented command? Parsed by the same command tree that ``--help``
prints, without running anything: subcommands, options, their values and arguments."""

from __future__ import annotations

from functools import cache
from typing import Any

import typer
from typer._click.exceptions import ClickException  # Typer >= 0.20 vendors click


@cache
def cli_command() -> Any:
    """The CLI's click command tree, built once (Typer builds it anew on every run)."""
    from virtfleet.cli.main import app

    return typer.main.get_command(app)


def usage_error(argv: list[str]) -> str | None:
    """None when ``virtfleet ARGV...`` parses; else the CLI's own usage message."""
    if "--help" in argv:
        return _path_error([a for a in argv if a != "--help"])
    command: Any = cli_command()
    name, args, parent = "virtfleet", argv, None
    try:
        while True:
            if not args and getattr(command, "no_args_is_help", False):
                return f"{name}: arguments are missing (it would print its help)"
            ctx = command.make_context(name, list(args), parent=parent, resilient_parsing=False)
            if not hasattr(command, "resolve_command"):
                return None  # a leaf: options, values and arguments all parsed
            rest = [
                *getattr(ctx, "_protected_args", []),
                *ctx.args,
            ]  # click 8.2 keeps the name here
            if not rest:
                return f"{name}: a subcommand is missing"
            name, command, args = command.resolve_command(ctx, rest)
            parent = ctx
    except ClickException as err:  # no such command or option, a bad value, a missing argument
        return f"{name}: {err.format_message()}"


def _path_error(argv: list[str]) -> str | None:
    """``virtfleet A B --help``: only that the subcommands A B exist."""
    command: Any = cli_command()
    for word in argv:
        if word.startswith("-") or not hasattr(command, "get_command"):
            return None
        found = command.get_command(None, word)
        if found is None:
            return f"no such command {word!r}"
        command = found
    return None
