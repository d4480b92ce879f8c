"""What every CLI command shares: the client to the daemon and the one error exit.

Owns finding the daemon (``<data-dir>/api.sock`` via ``virtfleet.client.paths``,
or a remote from ``--remote``: ``virtfleet.client.remotes``), the
``client_factory`` and ``remote_factory`` tests replace, and the ``command``
decorator that turns an ``ApiError`` into ``error: <message> [<code>]`` on
stderr (or the error shape as JSON with ``--json``) and exit status 2 for
invalid input, 1 otherwise.
Must not render results (see ``output``) or know endpoints (see the client).
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer

from virtfleet.client import ApiError, api_socket, default_data_dir
from virtfleet.client.paths import remotes_file

if TYPE_CHECKING:
    from virtfleet.client import Client, remotes

F = TypeVar("F", bound=Callable[..., Any])
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
NoWaitOpt = Annotated[
    bool, typer.Option("--no-wait", help="Return at once and print the operation id.")
]


@dataclass
class CliState:
    """Global options of the current invocation (set by the app's callback)."""

    data_dir: Path = field(default_factory=default_data_dir)
    remote: str | None = None  # --remote / $VIRTFLEET_REMOTE
    local_forced: bool = False  # --data-dir / $VIRTFLEET_DATA_DIR given: the local daemon


state = CliState()


def default_client(data_dir: Path) -> Client:
    from virtfleet.client.sync import Client

    return Client(uds_path=api_socket(data_dir))


def default_remote_client(remote: remotes.Remote) -> Client:
    from virtfleet.client import remotes

    return remotes.client_for(remote)


client_factory: Callable[[Path], Client] = default_client
remote_factory: Callable[[remotes.Remote], Client] = default_remote_client


def data_dir() -> Path:
    return state.data_dir


def get_client() -> Client:
    """The client to the selected remote (``remotes.selected``), else to the daemon of
    the current ``--data-dir``."""
    remote = selected_remote()
    return client_factory(data_dir()) if remote is None else remote_factory(remote)


def selected_remote() -> remotes.Remote | None:
    if state.local_forced and not state.remote:
        return None  # the remotes file is not even read
    if not state.remote and not remotes_file().exists():
        return None  # no remotes, so no default one: the local daemon
    from virtfleet.client import remotes

    config = remotes.load()
    name = remotes.selected(state.remote, state.local_forced, config)
    return None if name is None else config.remotes[name]


def invalid(message: str) -> ApiError:
    return ApiError("invalid_input", message, 400)


def fail(err: ApiError, as_json: bool) -> NoReturn:
    """Report ``err`` (one line on stderr, or its JSON shape on stdout) and exit."""
    if as_json:
        print(json.dumps(err.to_dict()))
    else:
        print(f"error: {err.message} [{err.code}]", file=sys.stderr)
    raise typer.Exit(2 if err.invalid_input else 1)


def command(group: typer.Typer, name: str | None = None, **kwargs: Any) -> Callable[[F], F]:
    """Register ``fn`` as a command of ``group`` whose ``ApiError`` ends in ``fail``."""

    def register(fn: F) -> F:
        @functools.wraps(fn)
        def run(*args: Any, **params: Any) -> Any:
            try:
                return fn(*args, **params)
            except ApiError as err:
                fail(err, bool(params.get("json_out")))

        group.command(name, **kwargs)(run)
        return fn

    return register
