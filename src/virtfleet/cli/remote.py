"""``virtfleet remote ...``: add, list, remove and choose the default remote daemon.

Owns the first-use trust dialogue (show the certificate's SHA-256 fingerprint
and ask, unless ``--accept-fingerprint`` or ``--yes``), checking a new remote
answers (and accepts its token) before it is saved, and rendering the list.
Tokens are never printed. Must not read or write the remotes file itself
(``virtfleet.client.remotes`` does) nor pin anything (``virtfleet.client.tls``).
"""

from __future__ import annotations

import ssl
import sys
from typing import Annotated, Any

import typer

from virtfleet.cli import output
from virtfleet.cli.context import JsonOpt, command, data_dir
from virtfleet.client import ApiError, api_socket, remotes
from virtfleet.client.errors import CertificateMismatchError, transport_error
from virtfleet.client.remotes import LOCAL, Remote
from virtfleet.client.tls import fetch_fingerprint

app = typer.Typer(
    help="Remote daemons reached over HTTPS with a token (use with --remote NAME).",
    no_args_is_help=True,
)
NameArg = Annotated[str, typer.Argument(help="Remote name.", show_default=False)]
CHECK_TIMEOUT_S = 15.0


@command(app, "add")
def add(
    name: NameArg,
    url: Annotated[str, typer.Argument(help="https://HOST[:PORT] (port 8006 by default).")],
    token: Annotated[
        str,
        typer.Option("--token", help="API token (`virtfleet token create`); - reads stdin."),
    ],
    accept_fingerprint: Annotated[
        str | None,
        typer.Option(
            "--accept-fingerprint",
            metavar="SHA256",
            help="Trust the certificate only if it has this SHA-256 fingerprint.",
        ),
    ] = None,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Trust the certificate shown without asking.")
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Add a remote; its certificate is pinned on first use, like SSH host keys."""
    remotes.check_name(name)
    scheme, host, port = remotes.parse_url(url)
    config = remotes.load()
    if name in config.remotes:
        hint = f"`virtfleet remote remove {name}` first"
        raise ApiError("already_exists", f"remote {name!r} already exists; {hint}", 409)
    if token == "-":
        token = sys.stdin.readline().strip()
    remote = Remote(url=remotes.canonical_url(scheme, host, port), token=token or None)
    if scheme == "https":
        remote.fingerprint = _trust(host, port, accept_fingerprint, yes)
    _check(remote)
    config.remotes[name] = remote
    remotes.save(config)
    if json_out:
        output.print_json(_row(name, remote, config.default))
    output.done(f"remote {name} added: {remote.url}", json_out)


def _trust(host: str, port: int, accept: str | None, yes: bool) -> str:
    """The fingerprint to pin for ``host:port``: the one seen, once the user trusts it."""
    where = f"{host}:{port}"
    wanted = remotes.normalized(accept) if accept else None
    try:
        seen = fetch_fingerprint(host, port, CHECK_TIMEOUT_S)
    except (OSError, ssl.SSLError) as err:
        raise transport_error(where, err) from err
    if wanted is not None:
        if wanted != seen:
            raise CertificateMismatchError(where, wanted, seen)
        return seen
    if not yes:
        print(f"The TLS certificate of {where} is not known yet.", file=sys.stderr)
        print(f"SHA-256 fingerprint: {seen}", file=sys.stderr)
        print("Compare it with the one `virtfleet serve` printed at start.", file=sys.stderr)
        if not typer.confirm("Trust this certificate?", default=False, err=True):
            raise ApiError("cancelled", "certificate not trusted: remote not added", 499)
    return seen


def _check(remote: Remote) -> None:
    """Fail unless ``remote`` answers through its pin and accepts its token."""
    with remotes.client_for(remote, CHECK_TIMEOUT_S) as client:
        client.info()
        client.list_instances()  # needs a valid token wherever authentication is on


@command(app, "list")
def list_(json_out: JsonOpt = False) -> None:
    """List remotes (``local`` is this machine's daemon, through its Unix socket)."""
    config = remotes.load()
    rows: list[dict[str, Any]] = [
        {
            "name": LOCAL,
            "url": f"unix:{api_socket(data_dir())}",
            "fingerprint": None,
            "default": config.default in (None, LOCAL),
            "token": False,
        }
    ]
    rows += [_row(name, r, config.default) for name, r in sorted(config.remotes.items())]
    if json_out:
        output.print_json(rows)
        return
    output.table(
        ["NAME", "URL", "FINGERPRINT", "TOKEN", "DEFAULT"],
        [
            [r["name"], r["url"], r["fingerprint"] or "-", _yes(r["token"]), _yes(r["default"])]
            for r in rows
        ],
    )


def _row(name: str, remote: Remote, default: str | None) -> dict[str, Any]:
    return {
        "name": name,
        "url": remote.url,
        "fingerprint": remote.fingerprint,
        "default": name == default,
        "token": remote.token is not None,
    }


def _yes(flag: bool) -> str:
    return "yes" if flag else ""


@command(app, "remove")
def remove(name: NameArg, json_out: JsonOpt = False) -> None:
    """Forget a remote (and its pinned certificate and token)."""
    config = remotes.load()
    if config.remotes.pop(name, None) is None:
        raise ApiError("not_found", f"no remote named {name!r}", 404)
    if config.default == name:
        config.default = None
    remotes.save(config)
    if json_out:
        output.print_json({"name": name, "removed": True})
    output.done(f"remote {name} removed", json_out)


@command(app, "default")
def default(
    name: Annotated[
        str | None, typer.Argument(help="Remote to use when none is given; local resets.")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Show or set the remote commands use without --remote (``local``: this machine)."""
    config = remotes.load()
    if name is not None:
        if name != LOCAL and name not in config.remotes:
            raise ApiError("not_found", f"no remote named {name!r}", 404)
        config.default = None if name == LOCAL else name
        remotes.save(config)
    current = config.default or LOCAL
    if json_out:
        output.print_json({"default": current})
        return
    print(current)
