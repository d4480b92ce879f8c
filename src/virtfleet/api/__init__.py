"""The HTTP API (FastAPI): one route module per resource, one error mapping, websockets.

Must not hold business rules (those are in ``virtfleet.service``) nor touch the
store or QEMU.
"""

from __future__ import annotations

from virtfleet.api.app import create_app

__all__ = ["create_app"]
