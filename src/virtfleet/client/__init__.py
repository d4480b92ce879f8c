"""Typed HTTP client of the virtfleet API (httpx): ``Client`` (sync) and ``AsyncClient``.

Used by the CLI and tests. Must talk HTTP only: never import api, service,
state, drivers or host.
"""

from __future__ import annotations

from virtfleet.client.aio import AsyncClient
from virtfleet.client.errors import ApiError, DaemonUnavailableError
from virtfleet.client.models import Image, Instance
from virtfleet.client.paths import api_socket, default_data_dir
from virtfleet.client.sync import Client, WsTarget, raise_for_operation

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
