"""The console keeper process: holds every container's pty master so consoles outlive the agent.

One keeper per container run directory, started by ``console.ConsoleKeeper`` as
``python -I -S keeper.py FD`` with its listening socket (``SOCK_SEQPACKET``) as
fd ``FD``: standard library only, so it starts in milliseconds and stays small
(one process for all containers instead of one per container). A closed master
would hang up the container's console, so the keeper's copy keeps it open while
no agent runs; a restarted agent asks for it back.

Messages, one per packet: ``K<name>`` with one fd: keep it (closing the one kept
before under that name); ``D<name>``: close it; ``G<name>``: answer ``G<name>``
with a copy of the fd, or ``N<name>`` if none is kept. The keeper exits once it
keeps nothing and no one is connected. It must do nothing else: no files, no logs.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import socket
import sys

MAX_PACKET = 4096
FIRST_CLIENT_S = 30.0  # the starter connects right away; give up if it never does


class Keeper:
    def __init__(self, listener: socket.socket) -> None:
        self.listener = listener
        self.kept: dict[str, int] = {}
        self.selector = selectors.DefaultSelector()
        self.selector.register(listener, selectors.EVENT_READ)
        self.clients = 0

    def run(self) -> None:
        if not self.selector.select(FIRST_CLIENT_S):
            return
        while True:
            ready = self.selector.select(None if self.kept or self.clients else 0)
            if not ready:
                return  # nothing kept, nobody connected, no one knocking
            for key, _ in ready:
                if key.fileobj is self.listener:
                    self._accept()
                else:
                    assert isinstance(key.fileobj, socket.socket)
                    self._serve(key.fileobj)

    def _accept(self) -> None:
        conn, _ = self.listener.accept()
        self.selector.register(conn, selectors.EVENT_READ)
        self.clients += 1

    def _serve(self, conn: socket.socket) -> None:
        try:
            msg, fds, _, _ = socket.recv_fds(conn, MAX_PACKET, 4)
        except OSError:
            msg, fds = b"", []
        if not msg:
            self.selector.unregister(conn)
            conn.close()
            self.clients -= 1
        else:
            fds = self._handle(conn, msg[:1], msg[1:].decode(errors="replace"), fds)
        for fd in fds:  # whatever was sent and not kept
            _close(fd)

    def _handle(self, conn: socket.socket, verb: bytes, name: str, fds: list[int]) -> list[int]:
        """Act on one message; return the fds it did not keep."""
        if verb == b"K" and fds:
            self._drop(name)
            self.kept[name] = fds[0]
            return fds[1:]
        if verb == b"D":
            self._drop(name)
        elif verb == b"G":
            fd = self.kept.get(name)
            with contextlib.suppress(OSError):  # an asker gone meanwhile
                if fd is None:
                    conn.send(b"N" + name.encode())
                else:
                    socket.send_fds(conn, [b"G" + name.encode()], [fd])
        return fds

    def _drop(self, name: str) -> None:
        fd = self.kept.pop(name, None)
        if fd is not None:
            _close(fd)


def _close(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)


def main(argv: list[str]) -> None:
    listener = socket.socket(fileno=int(argv[1]))
    Keeper(listener).run()


if __name__ == "__main__":
    main(sys.argv)
