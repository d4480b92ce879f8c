"""``virtfleet disk ...``: list instance disk directories (kept ones with --orphaned) and
delete kept disks.

Owns arguments -> ``/1.0/disks`` calls -> tables/JSON. Must not decide anything the
API decides (which disks belong to an instance).
"""

from __future__ import annotations

from typing import Annotated

import typer

from virtfleet.cli import output
from virtfleet.cli.context import JsonOpt, command, get_client
from virtfleet.cli.sizes import format_bytes
from virtfleet.client import disks as calls

app = typer.Typer(help="Instance disk directories, kept ones included.", no_args_is_help=True)
ReuseDisksOpt = Annotated[
    bool,
    typer.Option(
        "--reuse-disks", help="Attach the disks kept from a deleted instance of this name."
    ),
]


@command(app, "list")
def list_(
    orphaned: Annotated[
        bool, typer.Option("--orphaned", help="Only disks no instance owns (kept by vm delete).")
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """List disk directories: their files, size and whether an instance owns them."""
    dirs = get_client().call(calls.list_disks(orphaned))
    if json_out:
        output.print_json(dirs)
        return
    rows = [
        [d.name, "kept" if d.orphaned else "in use", format_bytes(d.size_bytes),
         ", ".join(d.files) or "-", d.path]
        for d in dirs
    ]  # fmt: skip
    output.table(["NAME", "STATE", "SIZE", "FILES", "PATH"], rows)


@command(app, "delete")
def delete(
    name: Annotated[str, typer.Argument(help="Instance name.", show_default=False)],
    json_out: JsonOpt = False,
) -> None:
    """Delete the disks kept from a deleted instance (refused while the instance exists)."""
    result = get_client().call(calls.delete_disks(name))
    if json_out:
        output.print_json(result)
    else:
        output.done(f"kept disks of {name} deleted" if result["deleted"] else
                    f"{name} has no kept disks", False)  # fmt: skip
