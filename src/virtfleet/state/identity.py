"""This host's identity: a UUID and a name, created once in the data directory.

Owns ``host.json`` (``{"id": uuid4, "name": ...}``), written atomically (a temporary
file renamed over it) the first time a daemon starts on a data directory and only
read after that: copying or moving the directory keeps the id, a new directory gets
a new one. Nothing here is derived from a path. Must not touch the store.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

from virtfleet.errors import InvalidInputError
from virtfleet.model.names import validate_name

FILE = "host.json"


@dataclass(frozen=True)
class HostIdentity:
    id: str
    name: str


def load_or_create(data_dir: Path, name: str | None = None) -> HostIdentity:
    """The identity kept in ``data_dir``; made now (id: a new uuid4, name: ``name`` or this
    machine's hostname) if there is none. ``name`` only names a new identity: an existing
    one keeps its name (``rename`` changes it)."""
    found = load(data_dir)
    if found is not None:
        return found
    made = HostIdentity(str(uuid.uuid4()), _valid(name or default_name()))
    _write(data_dir, made)
    return load(data_dir) or made


def load(data_dir: Path) -> HostIdentity | None:
    """The identity in ``data_dir``, None if it has none; ``InvalidInputError`` if the file
    is not one (a damaged identity is never silently replaced: instances name it)."""
    path = data_dir / FILE
    try:
        raw = json.loads(path.read_text())
        return HostIdentity(str(uuid.UUID(raw["id"])), str(raw["name"]))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise InvalidInputError(f"{path} is not a host identity: {err}") from err


def rename(data_dir: Path, name: str) -> HostIdentity:
    """Give the host in ``data_dir`` a new name (its id stays)."""
    current = load_or_create(data_dir, name)
    renamed = HostIdentity(current.id, _valid(name))
    _write(data_dir, renamed, replace=True)
    return renamed


def default_name() -> str:
    """The machine's hostname (its first label), as a valid host name."""
    label = socket.gethostname().split(".", 1)[0].lower() or "host"
    try:
        return validate_name(label, "host name")
    except InvalidInputError:
        return "host"


def _valid(name: str) -> str:
    return validate_name(name, "host name")


def _write(data_dir: Path, identity: HostIdentity, replace: bool = False) -> None:
    """Atomically: a reader sees no file or a whole one; two first starts racing keep the
    first identity written (``os.link`` fails on an existing name)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=data_dir, prefix=".host-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as out:
            json.dump({"id": identity.id, "name": identity.name}, out)
            out.flush()
            os.fsync(out.fileno())
        if replace:
            os.replace(tmp, data_dir / FILE)
        else:
            with contextlib.suppress(FileExistsError):  # another start made it first
                os.link(tmp, data_dir / FILE)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
