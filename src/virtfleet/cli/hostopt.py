"""The ``--host`` option of ``vm create`` and ``container create``: which cluster member
owns the new instance (default: the daemon's placement chooses). Must not check it (the
API answers 400 ``unknown_host`` for a host that is not a member)."""

from __future__ import annotations

from typing import Annotated

import typer

HostOpt = Annotated[
    str | None,
    typer.Option(
        "--host",
        help="The cluster host (name or id) to own it [the least-allocated that fits].",
        show_default=False,
    ),
]
