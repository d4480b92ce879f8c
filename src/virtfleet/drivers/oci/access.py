"""Whether a container's mapped root can reach its rootfs: search permission on every
directory from ``/`` down to the driver's rootfs mount root (the runtime directory,
``/run/virtfleet/<id>/rootfs`` by default; never the private data directory).

With a user namespace the runtime sets the container up as the mapped root (host uid
``IdMap.host_id``), an unprivileged user on the host: one directory on the way
without search permission for it (a runtime directory under a 0700 parent) makes every
container start fail with ``error preparing rootfs: ... permission denied``. Pure
``stat`` reads; must not change permissions (the operator decides).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path


def blocking_dir(path: Path, uid: int, gid: int) -> Path | None:
    """The first directory from ``/`` to ``path`` (included) that ``uid``/``gid`` may not
    search (no ``x`` for it by mode bits), or None. Missing parts are not checked."""
    path = path.absolute()
    for directory in (*reversed(path.parents), path):
        try:
            st = directory.stat()
        except OSError:
            return None  # not made yet: whoever makes it sets its mode
        if not _searchable(st, uid, gid):
            return directory
    return None


def _searchable(st: os.stat_result, uid: int, gid: int) -> bool:
    if st.st_uid == uid:
        return bool(st.st_mode & stat.S_IXUSR)
    if st.st_gid == gid:
        return bool(st.st_mode & stat.S_IXGRP)
    return bool(st.st_mode & stat.S_IXOTH)


def fix_hint(directory: Path) -> str:
    """The one-line advice for a ``blocking_dir`` result."""
    return f"chmod o+x {directory} (the containers' mapped root must traverse it)"
