"""The ``virtfleet`` command line: a thin layer of arguments -> client calls -> rendering.

Owns the Typer app, its global ``--data-dir`` option and ``main()`` (the
``virtfleet`` console script). The daemon is found at ``<data-dir>/api.sock``
(``virtfleet.client.paths.api_socket``). Must talk to the daemon through the
HTTP client only: never import api, service, state, drivers or host.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from virtfleet.cli import context, images, misc, vm
from virtfleet.client.paths import DATA_DIR_ENV, default_data_dir

app = typer.Typer(
    name="virtfleet",
    help="QEMU virtual machines managed through the virtfleet daemon.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(vm.app, name="vm")
app.add_typer(images.app, name="image")
app.add_typer(misc.host_app, name="host")
app.add_typer(misc.op_app, name="operation")
context.command(app, "events")(misc.events)


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
) -> None:
    context.state.data_dir = data_dir or default_data_dir()


@app.command()
def serve(
    store: Annotated[
        str, typer.Option(help="State store: sqlite (embedded) or memory.")
    ] = "sqlite",
    driver: Annotated[str, typer.Option(help="Instance driver: qemu or fake.")] = "qemu",
) -> None:
    """Run the daemon (API + agent) in the foreground; VMs keep running when it exits."""
    # Imported here: client commands must not pay for (or depend on) the whole platform.
    from virtfleet.app.bootstrap import serve as run_daemon
    from virtfleet.app.settings import Settings

    run_daemon(Settings(data_dir=context.state.data_dir, store=store, driver=driver))


def main() -> None:
    """Entry point of the ``virtfleet`` console script."""
    app()


if __name__ == "__main__":
    main()
