"""A ``QMPSession`` connected to a scripted fake QMP server, and a file to pass it."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

from tests.protocol.fake_qmp import FakeQMPServer, ScriptEntry
from virtfleet.drivers.qemu.qmp import QMPSession


@contextlib.asynccontextmanager
async def session_with_file(
    sock_dir: Path, script: Mapping[str, ScriptEntry]
) -> AsyncIterator[tuple[FakeQMPServer, QMPSession, int]]:
    """(fake server, session, fd of a new file ``sock_dir/file``); all closed on exit."""
    async with FakeQMPServer(sock_dir / "q.sock", script) as fake:
        session = await QMPSession.connect(fake.path, timeout_s=2.0)
        fd = os.open(sock_dir / "file", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            yield fake, session, fd
        finally:
            os.close(fd)
            await session.close()
