"""Process resource limits the daemon needs raised before it serves.

Owns lifting the soft open-files limit to the hard one: each running container holds
four descriptors in the daemon (console master and relay socket, its log, the init's
pidfd), and the common soft default of 1024 would refuse the ~250th. Must not change
any other limit.
"""

from __future__ import annotations

import resource


def raise_open_files_limit() -> int:
    """Set the soft RLIMIT_NOFILE to the hard one; return the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            return soft  # a ceiling below the hard limit (nr_open): keep what we have
        return target
    return soft
