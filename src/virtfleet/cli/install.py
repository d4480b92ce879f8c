"""``virtfleet install`` / ``uninstall``: the daemon as a systemd service on this host.

Thin: options to ``app.install`` and the answer rendered. Needs no daemon.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from virtfleet.cli import output
from virtfleet.cli.context import JsonOpt, invalid
from virtfleet.errors import VirtfleetError

RootOpt = Annotated[
    Path, typer.Option("--root", help="Install under this directory (tests, staging).")
]
SOURCE = Path(__file__).resolve().parents[3]  # the checkout an editable install runs from


def install(
    root: RootOpt = Path("/"),
    source: Annotated[
        Path, typer.Option("--source", help="The virtfleet source tree to build the wheel from.")
    ] = SOURCE,
    no_deps: Annotated[
        bool, typer.Option("--no-deps", help="Install only the wheel (dependencies present).")
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Install virtfleet as a service: its own venv under /opt/virtfleet, a systemd unit,
    log rotation and the data directory (0700)."""
    from virtfleet.app import install as setup

    try:
        placed = setup.install(setup.Layout(root.absolute()), source.absolute(), deps=not no_deps)
    except VirtfleetError as err:
        raise invalid(err.message) from err
    if json_out:
        output.print_json({"installed": [str(p) for p in placed]})
    output.done(f"installed: {', '.join(map(str, placed))}", json_out)


def uninstall(
    root: RootOpt = Path("/"),
    purge: Annotated[
        bool, typer.Option("--purge", help="Also delete the data directory (every VM's disks).")
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Remove the service and the program; the data directory stays unless --purge."""
    from virtfleet.app import install as setup

    removed = setup.uninstall(setup.Layout(root.absolute()), purge=purge)
    if json_out:
        output.print_json({"removed": [str(p) for p in removed]})
    output.done(f"removed: {', '.join(map(str, removed)) or 'nothing was installed'}", json_out)
