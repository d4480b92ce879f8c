"""Remotes: named daemons reached over HTTPS with a bearer token and a pinned certificate.

Owns the remotes file, ``$VIRTFLEET_CONFIG_DIR/remotes.json`` (default
``$XDG_CONFIG_HOME/virtfleet``, i.e. ``~/.config/virtfleet``), written
atomically with mode 0600 (it holds tokens) in a 0700 directory::

    {"version": 1, "default": "lab",
     "remotes": {"lab": {"url": "https://10.0.0.5:8006", "token": "...",
                         "fingerprint": "AB:CD:...:EF"}}}

``local`` is reserved: the daemon's Unix socket. Also owns which remote a
command talks to (``selected``) and the ``Client`` for a remote. Must not
prompt or print (the CLI's ``remote`` commands do) nor open connections
beyond building a client.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from virtfleet.client.errors import ApiError
from virtfleet.client.paths import CONFIG_DIR_ENV as CONFIG_DIR_ENV
from virtfleet.client.paths import REMOTE_ENV as REMOTE_ENV
from virtfleet.client.paths import config_dir as config_dir
from virtfleet.client.paths import remotes_file
from virtfleet.client.sync import DEFAULT_TIMEOUT_S, Client
from virtfleet.errors import InvalidNameError
from virtfleet.model.names import validate_name
from virtfleet.util.fingerprint import normalize_fingerprint
from virtfleet.util.net import is_loopback

LOCAL = "local"
DEFAULT_PORT = 8006
CONFIG_VERSION = 1


class Remote(BaseModel):
    """One remote: where it is, the token to send and the certificate pinned for it."""

    model_config = ConfigDict(extra="ignore")

    url: str
    token: str | None = None
    fingerprint: str | None = None  # SHA-256 of the certificate, for https only


class RemoteConfig(BaseModel):
    model_config = ConfigDict(extra="ignore")

    version: int = CONFIG_VERSION
    default: str | None = None
    remotes: dict[str, Remote] = Field(default_factory=dict)


def config_path() -> Path:
    return remotes_file()


def load(path: Path | None = None) -> RemoteConfig:
    """The remotes file (empty if missing); ``ApiError(invalid_config)`` if unreadable."""
    path = path or config_path()
    try:
        return RemoteConfig.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        return RemoteConfig()
    except (OSError, ValidationError) as err:
        raise ApiError("invalid_config", f"cannot read {path}: {_first_line(err)}", 400) from err


def save(config: RemoteConfig, path: Path | None = None) -> None:
    """Write ``config`` atomically, readable by its owner only."""
    path = path or config_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(prefix=".remotes.", dir=path.parent)  # mkstemp: mode 0600
    try:
        with os.fdopen(fd, "w") as out:
            out.write(config.model_dump_json(indent=2, exclude_none=True) + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_name(name: str) -> str:
    """``name`` if it can name a new remote; ``ApiError(invalid_name)`` if not."""
    if name == LOCAL:
        raise ApiError("invalid_name", f"{LOCAL!r} is reserved for the local daemon", 400)
    try:
        return validate_name(name, "remote name")
    except InvalidNameError as err:
        raise ApiError(err.code, err.message, err.status) from err


def parse_url(url: str) -> tuple[str, str, int]:
    """``(scheme, host, port)`` of a remote URL (port 8006 if absent).

    Plain ``http`` is refused except to loopback: the token would cross the network
    in the clear.
    """
    try:
        parts = urlsplit(url.strip())
        port = parts.port or DEFAULT_PORT
    except ValueError as err:
        raise ApiError("invalid_input", f"bad remote URL {url!r}: {err}", 400) from err
    host = parts.hostname or ""
    if parts.scheme not in ("https", "http") or not host or parts.path not in ("", "/"):
        raise ApiError("invalid_input", f"expected https://HOST[:PORT], got {url!r}", 400)
    if parts.scheme == "http" and not is_loopback(host):
        raise ApiError("invalid_input", f"{url}: use https for anything but loopback", 400)
    return parts.scheme, host, port


def canonical_url(scheme: str, host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown}:{port}"


def normalized(fingerprint: str) -> str:
    """``fingerprint`` canonically spelled; ``ApiError(invalid_input)`` if malformed."""
    try:
        return normalize_fingerprint(fingerprint)
    except ValueError as err:
        raise ApiError("invalid_input", str(err), 400) from err


def selected(explicit: str | None, local_forced: bool, config: RemoteConfig) -> str | None:
    """The remote a command talks to, or None for the local daemon.

    ``--remote``/``$VIRTFLEET_REMOTE`` win; then an explicit ``--data-dir`` (or
    ``$VIRTFLEET_DATA_DIR``) means local; then the configured default.
    """
    name = explicit if explicit else (None if local_forced else config.default)
    if not name or name == LOCAL:
        return None
    if name not in config.remotes:
        hint = "see `virtfleet remote list`"
        raise ApiError("not_found", f"no remote named {name!r}; {hint}", 404)
    return name


def client_for(remote: Remote, timeout_s: float = DEFAULT_TIMEOUT_S) -> Client:
    """A client for ``remote``: its URL, its bearer token, its pinned certificate."""
    return Client(
        remote.url, token=remote.token, fingerprint=remote.fingerprint, timeout_s=timeout_s
    )


def _first_line(err: Exception) -> str:
    return (str(err).splitlines() or [type(err).__name__])[0]
