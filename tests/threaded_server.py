"""Run a uvicorn server in a thread of its own for a test, and stop it after."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator

import uvicorn


@contextlib.contextmanager
def in_thread(server: uvicorn.Server, run: Callable[[], None], name: str) -> Iterator[None]:
    """Start ``run`` (which serves ``server``) in a thread; wait until it listens."""
    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.started, "uvicorn did not start"
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(10)
