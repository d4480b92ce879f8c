"""Commands built when first used: the CLI starts without importing or building the rest.

Typer turns every function of a group into a click command at start-up (signature,
annotations, option types), and the top level would import every command module.
``LazyGroup`` holds, per subcommand, the one line its parent's ``--help`` and shell
completion show and a ``load`` that builds it; ``virtfleet vm start c1`` imports
``cli/vm.py`` and builds ``vm`` and ``start`` only. Help is click's plain layout
(``rich_markup_mode=None``): Rich is not imported for ``--help``.
Owns ``LazyGroup``, ``lazy_group`` (a Typer app as a lazy group), ``command_of``
(one function as a top-level command) and ``plain_completion_help``. Must not know
the commands themselves (main.py lists the top level).
"""

from __future__ import annotations

import copy
import functools
import inspect
from collections.abc import Callable, Iterator, MutableMapping
from typing import Any, NamedTuple

import typer
import typer._completion_classes
from typer._click import Command, Context, HelpFormatter
from typer._click.shell_completion import CompletionItem
from typer._click.utils import make_default_short_help
from typer.core import TyperGroup
from typer.main import get_command_from_info, get_command_name, get_group_from_info
from typer.models import TyperInfo

from virtfleet.cli.context import command

MARKUP = None  # click's plain help: no Rich at start-up


class Entry(NamedTuple):
    """A subcommand not built yet: its help (the first paragraph is enough) and builder."""

    help: str
    load: Callable[[], Command]


class LazyCommands(MutableMapping[str, Command]):
    """A group's subcommands by name, in order; an ``Entry`` is built on first access."""

    def __init__(self, built: MutableMapping[str, Command]) -> None:
        self._built = dict(built)
        self._entries: dict[str, Entry] = {}

    def add(self, name: str, entry: Entry) -> None:
        self._entries[name] = entry

    @property
    def loaded(self) -> list[str]:
        """The subcommands built so far."""
        return list(self._built)

    def summary(self, name: str, limit: int) -> str:
        """The short help of ``name`` as click shows it, without building it."""
        if name in self._built:
            return self._built[name].get_short_help_str(limit)
        return make_default_short_help(self._entries[name].help, limit).strip()

    def __getitem__(self, name: str) -> Command:
        if name not in self._built:
            self._built[name] = self._entries[name].load()
        return self._built[name]

    def __setitem__(self, name: str, cmd: Command) -> None:
        self._built[name] = cmd

    def __delitem__(self, name: str) -> None:
        self._built.pop(name, None)
        self._entries.pop(name, None)

    def __iter__(self) -> Iterator[str]:
        yield from self._built
        yield from (name for name in self._entries if name not in self._built)

    def __len__(self) -> int:
        return len(self._built.keys() | self._entries.keys())

    def __contains__(self, name: object) -> bool:
        return name in self._built or name in self._entries


class LazyGroup(TyperGroup):
    """A Typer group whose subcommands are ``LazyCommands``: listing them (``--help``,
    completion, "did you mean") reads their help; only running one builds it."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.commands = self.lazy = LazyCommands(self.commands)

    def list_commands(self, ctx: Context) -> list[str]:
        return list(self.lazy)

    def format_commands(self, ctx: Context, formatter: HelpFormatter) -> None:
        names = self.list_commands(ctx)
        if names:
            limit = formatter.width - 6 - max(map(len, names))
            with formatter.section("Commands"):
                formatter.write_dl([(name, self.lazy.summary(name, limit)) for name in names])

    def shell_complete(self, ctx: Context, incomplete: str) -> list[CompletionItem]:
        items = [
            CompletionItem(name, help=self.lazy.summary(name, 45))
            for name in self.list_commands(ctx)
            if name.startswith(incomplete)
        ]
        return items + Command.shell_complete(self, ctx, incomplete)


def lazy_group(app: typer.Typer, name: str, info: TyperInfo | None = None) -> LazyGroup:
    """``app`` (added under ``name``; ``info``: how it was added) as a ``LazyGroup``."""
    shell = copy.copy(app)
    shell.registered_commands, shell.registered_groups = [], []
    info = copy.copy(info) if info is not None else TyperInfo(app, name=name)
    info.typer_instance, info.cls = shell, LazyGroup
    group = get_group_from_info(
        info, pretty_exceptions_short=True, suggest_commands=True, rich_markup_mode=MARKUP
    )
    assert isinstance(group, LazyGroup)
    for cmd in app.registered_commands:
        assert cmd.callback is not None
        text = cmd.help or inspect.getdoc(cmd.callback) or ""
        build = functools.partial(
            get_command_from_info, cmd, pretty_exceptions_short=True, rich_markup_mode=MARKUP
        )
        group.lazy.add(cmd.name or get_command_name(cmd.callback.__name__), Entry(text, build))
    for sub in app.registered_groups:
        assert sub.name and sub.typer_instance
        load = functools.partial(lazy_group, sub.typer_instance, sub.name, sub)
        group.lazy.add(sub.name, Entry(_group_help(sub), load))
    return group


def command_of(fn: Callable[..., Any], name: str) -> Command:
    """``fn`` as the command ``name`` (an ``ApiError`` ends in ``context.fail``)."""
    holder = typer.Typer()
    command(holder, name)(fn)
    return get_command_from_info(
        holder.registered_commands[0], pretty_exceptions_short=True, rich_markup_mode=MARKUP
    )


def _group_help(info: TyperInfo) -> str:
    from typer.main import solve_typer_info_help

    return solve_typer_info_help(info)


def plain_completion_help() -> None:
    """Completions carry the help as written: Typer renders it through Rich to strip Rich
    markup (zsh, fish, PowerShell), which imports Rich on every TAB; with
    ``rich_markup_mode=None`` there is no markup to strip (idempotent)."""
    typer._completion_classes._sanitize_help_text = _as_written


def _as_written(text: str) -> str:
    return text
