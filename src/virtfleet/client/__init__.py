"""Typed HTTP client of the virtfleet API (httpx): ``Client`` (sync) and ``AsyncClient``.

Used by the CLI and tests. Names are imported on first use (PEP 562): a CLI command
that only needs ``ApiError`` or the paths does not pay for the client, httpx or the
models. Must talk HTTP only: never import api, service, state, drivers or host.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from virtfleet.client.errors import ApiError, DaemonUnavailableError
from virtfleet.client.paths import api_socket, default_data_dir

if TYPE_CHECKING:
    from virtfleet.client.aio import AsyncClient
    from virtfleet.client.models import Image, Instance
    from virtfleet.client.sync import Client, WsTarget, raise_for_operation

_LAZY = {
    "AsyncClient": "aio",
    "Client": "sync",
    "WsTarget": "sync",
    "raise_for_operation": "sync",
    "Image": "models",
    "Instance": "models",
}

__all__ = [
    "ApiError",
    "AsyncClient",
    "Client",
    "DaemonUnavailableError",
    "Image",
    "Instance",
    "WsTarget",
    "api_socket",
    "default_data_dir",
    "raise_for_operation",
]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    globals()[name] = value  # once: later lookups are plain attribute reads
    return value
