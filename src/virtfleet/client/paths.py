"""Where things are on disk, by convention shared by the CLI and the daemon.

The daemon listens on ``<data-dir>/api.sock`` (a Unix socket); the data dir is
``$VIRTFLEET_DATA_DIR``, else ``/var/lib/virtfleet`` for root, else
``$XDG_DATA_HOME/virtfleet`` (``~/.local/share/virtfleet``). The daemon computes
the same paths from its settings (app/); this module is the CLI's side and must
stay free of I/O beyond reading the environment.
"""

from __future__ import annotations

import os
from pathlib import Path

DATA_DIR_ENV = "VIRTFLEET_DATA_DIR"
SOCKET_NAME = "api.sock"


def default_data_dir() -> Path:
    """The data dir when none is given: the environment, else root's or the user's default."""
    if env := os.environ.get(DATA_DIR_ENV):
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/lib/virtfleet")
    xdg = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(xdg) / "virtfleet"


def api_socket(data_dir: Path) -> Path:
    """The daemon's API Unix socket inside ``data_dir``."""
    return data_dir / SOCKET_NAME
