"""``virtfleet template ...``: make templates from stopped VMs or images; list, show, delete.

Owns arguments -> client calls -> tables/JSON for templates (clones are
``vm create NAME... --from TEMPLATE``). Must not decide anything the API decides.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from virtfleet.cli import output
from virtfleet.cli.context import JsonOpt, NoWaitOpt, command, get_client, invalid
from virtfleet.cli.sizes import format_bytes
from virtfleet.client import imaging

app = typer.Typer(help="Templates (golden images) for clones.", no_args_is_help=True)
NameArg = Annotated[str, typer.Argument(help="Template name.", show_default=False)]


@command(app, "create")
def create(
    name: NameArg,
    instance: Annotated[str | None, typer.Option("--from-vm", help="A stopped VM.")] = None,
    image: Annotated[str | None, typer.Option("--from-image", help="An image.")] = None,
    agent: Annotated[
        bool, typer.Option("--agent", help="Clones get a guest agent channel.")
    ] = False,
    no_wait: NoWaitOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Make a read-only template from a stopped VM's disk (or from an image)."""
    if (instance is None) == (image is None):
        raise invalid("give exactly one of --from-vm or --from-image")
    defaults = {"guest_agent": True} if agent and image else None
    client = get_client()
    op = client.call(imaging.create_template(name, instance, image, defaults))
    done = output.run_operation(
        client, op, f"creating template {name}", as_json=json_out, no_wait=no_wait
    )
    if done is not None:
        dropped = done.result.get("generalised") or []
        note = f" (generalised: {'; '.join(dropped)})" if dropped else ""
        output.done(f"template {name} created{note}", json_out)


@command(app, "list")
def list_(json_out: JsonOpt = False) -> None:
    """List templates."""
    items = get_client().call(imaging.list_templates())
    if json_out:
        output.print_json(items)
        return
    output.table(
        ["NAME", "VIRTUAL SIZE", "ON DISK", "SOURCE", "CREATED"],
        [
            [t.name, format_bytes(t.virtual_size_bytes), format_bytes(t.actual_size_bytes),
             t.source, t.created_at.strftime("%Y-%m-%d %H:%M")]
            for t in items
        ],
    )  # fmt: skip


@command(app, "show")
def show(name: NameArg, json_out: JsonOpt = False) -> None:
    """Show one template and the defaults its clones get."""
    t = get_client().call(imaging.get_template(name))
    if json_out:
        output.print_json(t)
        return
    output.fields(
        [
            ("name", t.name),
            ("path", t.path),
            ("virtual size", format_bytes(t.virtual_size_bytes)),
            ("sha256", t.sha256),
            ("source", t.source),
            ("generalised", "; ".join(t.generalised) or "-"),
        ]
    )
    # What each clone gets, and whether the template or the platform's default decides it.
    output.table(
        ["SETTING", "VALUE", "FROM"],
        [[k, _short(v["value"]), v["set_by"]] for k, v in t.effective.items()],
    )


def _short(value: object) -> str:
    return (
        "-"
        if value is None
        else json.dumps(value)
        if isinstance(value, list | dict)
        else str(value)
    )


@command(app, "delete")
def delete(name: NameArg, json_out: JsonOpt = False) -> None:
    """Delete a template (refused while linked clones use it)."""
    deleted = get_client().call(imaging.delete_template(name))
    if json_out:
        output.print_json({"name": name, "deleted": deleted})
    else:
        output.done(f"template {name} deleted" if deleted else f"{name} did not exist", False)
