"""Store URLs: the one place that turns the daemon's ``--store`` setting into a store.

A setting is ``sqlite`` (the embedded default, ``<data-dir>/virtfleet.db``), ``memory``
(tests), or one or more etcd client URLs ``etcd+http://HOST:PORT`` /
``etcd+https://HOST:PORT`` (comma-separated, or the ``--store`` option repeated), with
the client TLS files (CA, certificate, key) for ``etcd+https``. Anything else is an
``InvalidStoreUrlError`` before anything is created. Must not open connections while
parsing: ``EtcdStore`` connects lazily, so a daemon starts even while etcd is down.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from virtfleet.errors import InvalidInputError, InvalidStoreUrlError
from virtfleet.state.etcd import EtcdStore, EtcdTLS, grpc_target
from virtfleet.state.memory import MemoryStore
from virtfleet.state.sqlite import SQLiteStore
from virtfleet.state.store import StateStore

SCHEMES = ("etcd+http", "etcd+https")
USAGE = "use sqlite, memory, or etcd+http(s)://HOST:PORT URLs"


@dataclass(frozen=True)
class StoreUrl:
    """A parsed store setting: its kind and, for etcd, the client endpoints."""

    kind: Literal["sqlite", "memory", "etcd"]
    endpoints: tuple[str, ...] = ()  # http(s)://HOST:PORT, as etcd's clients name them
    tls: bool = False

    def describe(self) -> str:
        if self.kind != "etcd":
            return self.kind
        return "etcd at " + ", ".join(self.endpoints)


@dataclass(frozen=True)
class EtcdFiles:
    """Client TLS files for etcd+https (None: system CAs, no client certificate)."""

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None


def parse_store(setting: str) -> StoreUrl:
    """``sqlite``, ``memory`` or etcd URLs (comma-separated); ``InvalidStoreUrlError``."""
    parts = [p.strip() for p in setting.split(",") if p.strip()]
    if len(parts) == 1 and parts[0] in ("sqlite", "memory"):
        return StoreUrl(kind="sqlite" if parts[0] == "sqlite" else "memory")
    if not parts:
        raise InvalidStoreUrlError(f"empty store setting: {USAGE}")
    urls = [_etcd_url(p) for p in parts]
    schemes = {scheme for scheme, _ in urls}
    if len(schemes) > 1:
        raise InvalidStoreUrlError("etcd URLs mix etcd+http and etcd+https: use one scheme")
    endpoints = tuple(dict.fromkeys(endpoint for _, endpoint in urls))  # in order, once each
    try:
        grpc_target(endpoints)  # what the client can connect to
    except InvalidInputError as err:
        raise InvalidStoreUrlError(err.message) from None
    return StoreUrl(kind="etcd", endpoints=endpoints, tls=schemes == {"etcd+https"})


def _etcd_url(text: str) -> tuple[str, str]:
    """(scheme, ``http(s)://HOST:PORT``) of one etcd URL."""
    try:
        url = urlsplit(text)
        port = url.port
    except ValueError as err:
        raise InvalidStoreUrlError(f"store URL {text!r} is not valid: {err}") from None
    if url.scheme not in SCHEMES:
        raise InvalidStoreUrlError(f"store {text!r} is not known: {USAGE}")
    if not url.hostname or port is None:
        raise InvalidStoreUrlError(f"store URL {text!r} needs a host and a port")
    if url.path not in ("", "/") or url.query or url.fragment or url.username:
        raise InvalidStoreUrlError(f"store URL {text!r} takes only a host and a port")
    host = f"[{url.hostname}]" if ":" in url.hostname else url.hostname
    return url.scheme, f"{url.scheme.removeprefix('etcd+')}://{host}:{port}"


def check_tls(url: StoreUrl, files: EtcdFiles) -> EtcdTLS | None:
    """The etcd client TLS for ``url``: files only with etcd+https, cert and key together,
    each readable now (a one-line error beats a TLS failure on the first request)."""
    given = [f for f in (files.ca, files.cert, files.key) if f is not None]
    if not url.tls:
        if given:
            raise InvalidStoreUrlError("--etcd-ca, --etcd-cert and --etcd-key need etcd+https")
        return None
    if (files.cert is None) != (files.key is None):
        raise InvalidStoreUrlError("--etcd-cert and --etcd-key go together")
    for path in given:
        try:
            path.read_bytes()
        except OSError as err:
            raise InvalidStoreUrlError(f"etcd TLS file {path}: {err.strerror}") from None
    return EtcdTLS(ca=files.ca, cert=files.cert, key=files.key)


def check_store(setting: str, files: EtcdFiles | None = None) -> StoreUrl:
    """Parse ``setting`` and check its TLS files; nothing is created or connected."""
    url = parse_store(setting)
    check_tls(url, files or EtcdFiles())
    return url


def open_store(setting: str, sqlite_path: Path, files: EtcdFiles | None = None) -> StateStore:
    """The store ``setting`` names (nothing is connected yet for etcd)."""
    url = check_store(setting, files)
    if url.kind == "memory":
        return MemoryStore()
    if url.kind == "sqlite":
        return SQLiteStore(sqlite_path)
    return EtcdStore(url.endpoints, tls=check_tls(url, files or EtcdFiles()))
