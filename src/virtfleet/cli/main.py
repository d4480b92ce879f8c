"""The ``virtfleet`` command line: a thin layer of arguments -> client calls -> rendering.

Owns the Typer app, its global ``--data-dir`` and ``--remote`` options and
``main()`` (the ``virtfleet`` console script). The daemon is found at
``<data-dir>/api.sock`` (``virtfleet.client.paths.api_socket``), a remote one
through ``virtfleet.client.remotes``. Must talk to the daemon through the
HTTP client only: never import api, service, state, drivers or host.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

# Typer >= 0.20 vendors click; its usage errors are only exported from here.
from typer._click.exceptions import UsageError

from virtfleet.cli import (
    auth,
    backups,
    containers,
    context,
    disks,
    hostpower,
    images,
    instances,
    metrics,
    misc,
    networks,
    remote,
    snapshots,
    templates,
    vm,
    vmset,
)
from virtfleet.cli import (
    install as installer,
)
from virtfleet.client import ApiError
from virtfleet.client.paths import DATA_DIR_ENV, default_data_dir
from virtfleet.client.remotes import REMOTE_ENV

app = typer.Typer(
    name="virtfleet",
    help="QEMU virtual machines and system containers managed through the virtfleet daemon.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
vm.app.add_typer(snapshots.app, name="snapshot")
app.add_typer(vm.app, name="vm")
app.add_typer(containers.app, name="container")
instances.install(app)  # start|stop|...|snapshot NAME for VMs and containers alike
vmset.install(vm.app, misc.host_app)
hostpower.install(misc.host_app)
app.add_typer(backups.app, name="backup")
app.add_typer(images.app, name="image")
app.add_typer(networks.app, name="network")
app.add_typer(templates.app, name="template")
app.add_typer(disks.app, name="disk")
app.add_typer(misc.host_app, name="host")
app.add_typer(misc.op_app, name="operation")
app.add_typer(remote.app, name="remote")
context.command(app, "events")(misc.events)
app.add_typer(auth.token_app, name="token")
app.add_typer(auth.user_app, name="user")
context.command(app, "whoami")(auth.whoami)
context.command(app, "install")(installer.install)
context.command(app, "uninstall")(installer.uninstall)
context.command(app, "audit")(auth.audit)
app.add_typer(metrics.alert_app, name="alert")
for _name, _fn in metrics.top_level:
    context.command(app, _name)(_fn)


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


@app.command()
def serve(
    store: Annotated[
        str, typer.Option(help="State store: sqlite (embedded) or memory.")
    ] = "sqlite",
    driver: Annotated[str, typer.Option(help="Instance driver: qemu or fake.")] = "qemu",
    listen: Annotated[
        list[str] | None,
        typer.Option(
            "--listen",
            metavar="HOST:PORT",
            help="TCP address of the API besides <data-dir>/api.sock (repeatable or "
            "comma-separated; [V6]:PORT; none: Unix socket only). Anything but loopback "
            "is HTTPS. Default: 127.0.0.1:8006.",
            show_default=False,
        ),
    ] = None,
    tls: Annotated[bool, typer.Option("--tls", help="HTTPS on loopback too.")] = False,
    tls_cert: Annotated[
        Path | None, typer.Option("--tls-cert", help="PEM certificate (default: self-signed).")
    ] = None,
    tls_key: Annotated[Path | None, typer.Option("--tls-key", help="Its PEM key.")] = None,
    metrics_interval: Annotated[
        float, typer.Option("--metrics-interval", min=0.2, help="Seconds between metrics samples.")
    ] = 10.0,
    metrics_loopback: Annotated[
        bool,
        typer.Option("--metrics-loopback", help="Serve /metrics to loopback without a token."),
    ] = False,
    alert_webhook: Annotated[
        list[str] | None,
        typer.Option("--alert-webhook", metavar="URL", help="POST alerts here (repeatable)."),
    ] = None,
    import_dir: Annotated[
        Path | None,
        typer.Option(
            "--import-dir",
            help="Image/OVA imports over TCP read only here (default <data-dir>/import; "
            "env VIRTFLEET_IMPORT_DIR).",
            show_default=False,
        ),
    ] = None,
    export_dir: Annotated[
        Path | None,
        typer.Option(
            "--export-dir",
            help="Exports over TCP write only here (default <data-dir>/export; "
            "env VIRTFLEET_EXPORT_DIR).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Run the daemon (API + agent) in the foreground; VMs keep running when it exits."""
    # Imported here: client commands must not pay for (or depend on) the whole platform.
    from virtfleet.app.bootstrap import serve as run_daemon
    from virtfleet.app.settings import Settings
    from virtfleet.errors import VirtfleetError

    settings = Settings(data_dir=context.state.data_dir, store=store, driver=driver)
    settings.listen = listen or settings.listen
    settings.tls, settings.tls_cert, settings.tls_key = tls, tls_cert, tls_key
    settings.metrics_interval_s = metrics_interval
    settings.metrics_scrape_from_loopback = metrics_loopback
    settings.alert_webhooks = alert_webhook or []
    settings.import_dir = import_dir or settings.import_dir
    settings.export_dir = export_dir or settings.export_dir
    try:
        run_daemon(settings)
    except VirtfleetError as err:
        context.fail(ApiError(err.code, err.message, err.status), False)


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
