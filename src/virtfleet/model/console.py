"""Wire data of the graphical console: the short-lived ticket that opens a VNC websocket.

Pure data; must not do I/O.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ConsoleTicket(BaseModel):
    """A single-use ticket for ``/1.0/instances/{name}/vnc?ticket=...``."""

    model_config = ConfigDict(extra="forbid")

    ticket: str
    expires_in_s: int
