"""The ``virtfleet`` command line: a thin layer of arguments -> client calls -> rendering.

Owns the Typer app, its global ``--data-dir`` and ``--remote`` options, the list of
top-level commands and ``main()`` (the ``virtfleet`` console script). Each top-level
command is imported and built only when it runs (cli/lazy.py): ``virtfleet --help``
and completion read the one-line help listed here (tests/unit/test_cli_lazy.py checks
it against the commands'). The daemon is found at ``<data-dir>/api.sock``
(``virtfleet.client.paths.api_socket``), a remote one through ``virtfleet.client.remotes``.
Must talk to the daemon through the HTTP client only: never import api, service,
state, drivers or host.
"""

from __future__ import annotations

import functools
import importlib
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

# Typer >= 0.20 vendors click; its usage errors are only exported from here.
from typer._click import Command
from typer._click.exceptions import UsageError

from virtfleet.cli import coercion, context
from virtfleet.cli.lazy import (
    MARKUP,
    Entry,
    LazyGroup,
    command_of,
    lazy_group,
    plain_completion_help,
)
from virtfleet.client.paths import DATA_DIR_ENV, REMOTE_ENV, default_data_dir

# name: (module under virtfleet.cli, attribute, first paragraph of its help); a Typer
# app becomes a group, a function a command. In this order in ``virtfleet --help``.
TOP_LEVEL: dict[str, tuple[str, str, str]] = {
    "list": (
        "vm",
        "list_",
        "List instances (VMs and containers): kind, state, mode (kvm/tcg), size, devices, image.",
    ),
    "show": ("vm", "show", "Show one instance (VM or container) in detail."),
    "start": ("vm", "start", "Start a stopped instance."),
    "stop": (
        "vm",
        "stop",
        "Stop an instance cleanly, then hard after --timeout (at once with --force).",
    ),
    "restart": ("vm", "reboot", "Restart an instance (stop + start; --force = hard reset)."),
    "pause": (
        "vm",
        "pause",
        "Pause a running instance (its CPUs stop, a container is frozen; memory is kept).",
    ),
    "resume": ("vm", "resume", "Resume a paused instance."),
    "delete": ("vm", "delete", "Delete an instance (a missing one is not an error)."),
    "console": (
        "vm",
        "console",
        "Attach to the instance's console (a VM's serial console; detach with Ctrl-]).",
    ),
    "logs": (
        "vm",
        "logs",
        "Print the instance's console log (a VM's serial console, a container init's output).",
    ),
    "exec": (
        "containers",
        "exec_cmd",
        "Run a command in a running container: `virtfleet exec NAME -- cmd args...`.",
    ),
    "events": (
        "misc",
        "events",
        "Show recent events; with --follow keep streaming new ones (Ctrl-C stops).",
    ),
    "whoami": (
        "auth",
        "whoami",
        "Show who the daemon takes you for (the local socket: root@local, admin).",
    ),
    "audit": ("auth", "audit", "Show the audit log of changes, newest first (admins only)."),
    "top": ("metrics", "top", "Live table of the host and every running instance (Ctrl-C quits)."),
    "metrics": (
        "metrics",
        "metrics",
        "An instance's latest sample and its history (last, average, peak, sparkline).",
    ),
    "report": (
        "metrics",
        "report",
        "Utilization and consolidation: allocated vs used, idle/oversized VMs, bottlenecks.",
    ),
    "serve": (
        "serve",
        "serve",
        "Run the daemon (API + agent) in the foreground; VMs keep running when it exits.",
    ),
    "vm": ("vm", "app", "Virtual machines."),
    "container": (
        "containers",
        "app",
        "OS-level system containers (power, logs, console: the top-level verbs).",
    ),
    "snapshot": (
        "instances",
        "snapshot_app",
        "Snapshots of any instance: a VM's disk tree (live) or a stopped container's rootfs.",
    ),
    "backup": ("backups", "app", "Backups into the deduplicating repository."),
    "image": ("images", "app", "Base images."),
    "network": ("networks", "app", "Virtual networks (bridges with DHCP/DNS, NAT, VLANs)."),
    "template": ("templates", "app", "Templates (golden images) for clones."),
    "disk": ("disks", "app", "Instance disk directories, kept ones included."),
    "storage": ("storage", "app", "Storage pools and their volumes."),
    "host": ("misc", "host_app", "This host's virtualization facts, and the platform's hosts."),
    "cluster": (
        "cluster",
        "app",
        "The cluster (preview): the store, etcd's members and the hosts.",
    ),
    "operation": ("misc", "op_app", "Operations (slow work: start, stop, builds...)."),
    "remote": (
        "remote",
        "app",
        "Remote daemons reached over HTTPS with a token (use with --remote NAME).",
    ),
    "install": (
        "install",
        "install",
        "Install virtfleet as a service: its own venv under /opt/virtfleet, a systemd unit, "
        "log rotation and the data directory (0700).",
    ),
    "uninstall": (
        "install",
        "uninstall",
        "Remove the service and the program; the data directory stays unless --purge.",
    ),
    "token": ("auth", "token_app", "API tokens for automation."),
    "user": ("auth", "user_app", "Local users (admins only, but `passwd` for oneself)."),
    "alert": ("metrics", "alert_app", "Alert rules, firing alerts and silences."),
}


coercion.install()  # Typer's parameters without pydantic for plain values
plain_completion_help()  # and completions without Rich


def load(name: str) -> Command:
    """The top-level command ``name``, its module imported now."""
    module, attr, _ = TOP_LEVEL[name]
    target: Any = getattr(importlib.import_module(f"virtfleet.cli.{module}"), attr)
    if isinstance(target, typer.Typer):
        return lazy_group(target, name)
    return command_of(target, name)


class TopLevel(LazyGroup):
    """The ``virtfleet`` group: the commands of ``TOP_LEVEL``, each loaded when it runs."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        for name, (_, _, text) in TOP_LEVEL.items():
            self.lazy.add(name, Entry(text, functools.partial(load, name)))


app = typer.Typer(
    name="virtfleet",
    help="QEMU virtual machines and system containers managed through the virtfleet daemon.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=MARKUP,
    cls=TopLevel,
)


@app.callback()
def _global(
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            envvar=DATA_DIR_ENV,
            help="Daemon data dir (its API socket is <data-dir>/api.sock). "
            "Default: /var/lib/virtfleet as root, else ~/.local/share/virtfleet.",
            show_default=False,
        ),
    ] = None,
    remote: Annotated[
        str | None,
        typer.Option(
            "--remote",
            envvar=REMOTE_ENV,
            help="Talk to this remote (see `virtfleet remote`) instead of the local daemon; "
            "'local' for this machine. Default: `remote default`, unless --data-dir is given.",
            show_default=False,
        ),
    ] = None,
) -> None:
    context.state.data_dir = data_dir or default_data_dir()
    context.state.remote = remote
    context.state.local_forced = data_dir is not None


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``virtfleet`` console script.

    Usage errors (unknown option, bad choice, missing argument) get the same one-line
    ``error: ... [invalid_input]`` (or JSON with ``--json``) and exit 2 as API errors.
    """
    args = sys.argv[1:] if argv is None else argv
    try:
        # Without standalone mode click returns a command's exit code instead of exiting.
        code = app(args=args, standalone_mode=False)
        if isinstance(code, int):
            sys.exit(code)
    except UsageError as err:
        try:
            context.fail(context.invalid(_one_line(err.format_message())), "--json" in args)
        except typer.Exit as done:
            sys.exit(done.exit_code)
    except typer.Exit as err:
        sys.exit(err.exit_code)
    except typer.Abort:
        sys.exit(130)


def _one_line(text: str) -> str:
    return " ".join(text.split())


if __name__ == "__main__":
    main()
