"""The data directory's privacy: owned by the daemon's user, mode 0700, checked at every start.

Owns the rule that nobody but the daemon's user reads what the daemon keeps (the
store and its WAL with argon2 hashes and cloud-init data, the one-time admin
password, TLS key, logs, sockets, disks): ``PRIVATE_UMASK`` for everything the
daemon creates, and ``secure_data_dir`` which creates the directory 0700 or
*fixes* an existing one (and its direct children) that others could read,
logging what it changed. A directory owned by another user, or a symlink, is
refused: chmod-ing someone else's tree is not ours to do. Must not decide what
lives in the directory (``Settings`` does).
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from virtfleet.errors import ConflictError

log = logging.getLogger(__name__)

PRIVATE_UMASK = 0o077  # new files 0600, new directories 0700
DIR_MODE = 0o700
_OTHERS = 0o077  # group and other permission bits


def private_umask() -> int:
    """Set the process umask to ``PRIVATE_UMASK``; the previous one."""
    return os.umask(PRIVATE_UMASK)


def secure_data_dir(path: Path) -> list[Path]:
    """Create ``path`` (mode 0700) or make an existing one private; the paths it fixed.

    Direct children that group or others could use lose those bits too (files from an
    older version, a log a shell created 0644, the 0701 of versions that mounted
    container rootfs overlays inside it).
    ``ConflictError`` for a symlink, a non-directory or a directory owned by another user.
    """
    path.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise ConflictError(f"data directory {path} must be a directory, not a symlink or file")
    if st.st_uid != os.geteuid():
        raise ConflictError(
            f"data directory {path} is owned by uid {st.st_uid}, not by this daemon's uid "
            f"{os.geteuid()}: refusing to use it"
        )
    fixed = [path] if _make_private(path, st) else []
    with os.scandir(path) as entries:
        for entry in entries:
            child = entry.stat(follow_symlinks=False)
            if not stat.S_ISLNK(child.st_mode) and _make_private(Path(entry.path), child):
                fixed.append(Path(entry.path))
    for each in fixed:
        log.warning("%s was readable by other users: now %o", each, _mode(each))
    return fixed


def _make_private(path: Path, st: os.stat_result) -> bool:
    """Drop the group/other bits of ``path``; whether there were any."""
    if not st.st_mode & _OTHERS:
        return False
    os.chmod(path, stat.S_IMODE(st.st_mode) & ~_OTHERS, follow_symlinks=False)
    return True


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)
