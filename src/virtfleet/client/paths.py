"""Where things are on disk, by convention shared by the CLI and the daemon.

The daemon listens on ``<data-dir>/api.sock`` (a Unix socket); the data dir is
``$VIRTFLEET_DATA_DIR``, else ``/var/lib/virtfleet`` for root, else
``$XDG_DATA_HOME/virtfleet`` (``~/.local/share/virtfleet``); the remotes file is in
``$VIRTFLEET_CONFIG_DIR``, else ``$XDG_CONFIG_HOME/virtfleet``. The daemon computes
the same paths from its settings (app/); this module is the CLI's side and must
stay free of I/O beyond reading the environment.
"""

from __future__ import annotations

import os
from pathlib import Path

DATA_DIR_ENV = "VIRTFLEET_DATA_DIR"
SOCKET_NAME = "api.sock"
CONFIG_DIR_ENV = "VIRTFLEET_CONFIG_DIR"
REMOTE_ENV = "VIRTFLEET_REMOTE"


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


def config_dir() -> Path:
    """The CLI's configuration dir: the environment, else ``$XDG_CONFIG_HOME/virtfleet``."""
    if env := os.environ.get(CONFIG_DIR_ENV):
        return Path(env)
    xdg = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(xdg) / "virtfleet"


def remotes_file() -> Path:
    """The remotes file (``client.remotes`` owns its contents)."""
    return config_dir() / "remotes.json"
