"""``virtfleet serve``: run the daemon (API + agent) in the foreground.

The only CLI module that imports the platform, and only when the command runs: client
commands must not pay for (or depend on) it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from virtfleet.cli import context
from virtfleet.client import ApiError


def serve(
    store: Annotated[
        list[str] | None,
        typer.Option(
            "--store",
            metavar="STORE",
            help="State store: sqlite (embedded, the default), memory, or an external etcd "
            "as etcd+http://HOST:PORT / etcd+https://HOST:PORT (repeatable or comma-separated "
            "for several endpoints; env VIRTFLEET_STORE).",
            show_default=False,
        ),
    ] = None,
    etcd_ca: Annotated[
        Path | None, typer.Option("--etcd-ca", help="etcd+https: the CA (env VIRTFLEET_ETCD_CA).")
    ] = None,
    etcd_cert: Annotated[
        Path | None,
        typer.Option("--etcd-cert", help="etcd+https: client certificate (VIRTFLEET_ETCD_CERT)."),
    ] = None,
    etcd_key: Annotated[
        Path | None,
        typer.Option("--etcd-key", help="etcd+https: its key (env VIRTFLEET_ETCD_KEY)."),
    ] = None,
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
    host_name: Annotated[
        str | None,
        typer.Option(
            "--host-name",
            help="This host's name when its identity (<data-dir>/host.json) is first made "
            "(default: the machine's hostname; env VIRTFLEET_HOST_NAME).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Run the daemon (API + agent) in the foreground; VMs keep running when it exits."""
    # Imported here: client commands must not pay for (or depend on) the whole platform.
    from virtfleet.app.bootstrap import serve as run_daemon
    from virtfleet.app.settings import Settings
    from virtfleet.errors import VirtfleetError

    settings = Settings(data_dir=context.state.data_dir, driver=driver)
    settings.store = ",".join(store) if store else settings.store
    settings.etcd_ca = etcd_ca or settings.etcd_ca
    settings.etcd_cert = etcd_cert or settings.etcd_cert
    settings.etcd_key = etcd_key or settings.etcd_key
    settings.listen = listen or settings.listen
    settings.tls, settings.tls_cert, settings.tls_key = tls, tls_cert, tls_key
    settings.metrics_interval_s = metrics_interval
    settings.metrics_scrape_from_loopback = metrics_loopback
    settings.alert_webhooks = alert_webhook or []
    settings.import_dir = import_dir or settings.import_dir
    settings.export_dir = export_dir or settings.export_dir
    settings.host_name = host_name or settings.host_name
    try:
        run_daemon(settings)
    except VirtfleetError as err:
        context.fail(ApiError(err.code, err.message, err.status), False)
