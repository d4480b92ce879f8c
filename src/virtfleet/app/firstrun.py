"""First start: an empty user table gets an ``admin`` user, never with a default password.

Owns where the first password comes from (``$VIRTFLEET_ADMIN_PASSWORD``, else a
random one-time password) and where a random one goes: ``<data-dir>/initial-admin-password``
(mode 0600) always, and a clearly marked block on stderr only when stderr is a
terminal. Never a log: ``make run`` appends the daemon's stderr to a file, and a
redirected stderr gets only the file's path. Must not decide account rules
(``AuthService.ensure_admin`` does).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TextIO

from virtfleet.errors import InvalidInputError
from virtfleet.service.auth import AuthService, FirstAdmin

log = logging.getLogger(__name__)

PASSWORD_ENV = "VIRTFLEET_ADMIN_PASSWORD"
PASSWORD_FILE = "initial-admin-password"


async def ensure_admin(
    auth: AuthService,
    data_dir: Path,
    environ: Mapping[str, str] | None = None,
    out: TextIO | None = None,
) -> FirstAdmin | None:
    """Create the first admin if there are no users; what was created, or None."""
    env = os.environ if environ is None else environ
    given = env.get(PASSWORD_ENV) or None
    try:
        created = await auth.ensure_admin(given)
    except InvalidInputError as err:
        raise InvalidInputError(f"{PASSWORD_ENV}: {err.message}") from err
    if created is None:
        return None
    if created.generated:
        path = write_password_file(data_dir, created.password)
        stream = out or sys.stderr
        if _is_terminal(stream):
            announce(created, path, stream)
        else:  # a log file or a pipe: other readers, kept for long
            log.warning("created user %r; its one-time password is in %s", created.username, path)
    else:
        log.info("created user %r with the password from %s", created.username, PASSWORD_ENV)
    return created


def write_password_file(data_dir: Path, password: str) -> Path:
    """``<data-dir>/initial-admin-password``, readable by its owner only (0600 from birth)."""
    path = data_dir / PASSWORD_FILE
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(password + "\n")
    return path


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed or not a real file
        return False


def announce(created: FirstAdmin, path: Path, out: TextIO) -> None:
    rule = "=" * 72
    print(
        f"{rule}\n"
        f"virtfleet: created user {created.username!r} (role admin) with the one-time password\n\n"
        f"    {created.password}\n\n"
        f"It is also in {path} (mode 0600). Log in and change it:\n"
        f"    virtfleet user passwd {created.username}\n"
        f"{rule}",
        file=out,
        flush=True,
    )
