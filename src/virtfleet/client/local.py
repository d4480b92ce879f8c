"""Calls on the daemon's own Unix socket through the standard library's ``http.client``.

Owns one keep-alive connection per thread to the local socket. On this socket
httpx's layers (its URL, request and response models, connection pool and the
pure Python h11 parser) cost ~0.8 ms a call, and a local call needs none of what
they are for: no TLS, proxy, redirect or HTTP/2. An ``Answer`` becomes an
``httpx.Response`` only when one is needed (an error, a cookie): building one
costs ~0.2 ms. A client holding a session cookie goes through httpx. Must not
know endpoints, or errors beyond the transport's.
"""

from __future__ import annotations

import http.client
import json
import select
import socket
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx

# What fails a call on the socket itself (the caller turns it into DaemonUnavailable).
TransportFailure = (OSError, http.client.HTTPException)


@dataclass(frozen=True)
class Answer:
    """A response read whole."""

    status: int
    headers: list[tuple[str, str]]
    content: bytes

    def json(self) -> Any:
        return json.loads(self.content)

    def response(self) -> httpx.Response:
        return httpx.Response(self.status, headers=self.headers, content=self.content)


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout_s: float) -> None:
        super().__init__("virtfleet", timeout=timeout_s)
        self.path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


class LocalTransport:
    """HTTP/1.1 to the Unix socket at ``path``, a connection per thread kept alive."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._mine = threading.local()
        self._all: list[_UnixConnection] = []
        self._lock = threading.Lock()

    def send(
        self,
        method: str,
        path: str,
        params: Mapping[str, Any],
        body: Any,
        headers: Mapping[str, str],
        timeout_s: float,
    ) -> Answer:
        """One call (``body``: JSON, or None); its answer."""
        url = f"{path}?{urlencode(params, doseq=True)}" if params else path
        sent = dict(headers)
        content = None
        if body is not None:  # encoded as httpx does: compact UTF-8, no NaN
            text = json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
            content = text.encode()
            sent["Content-Type"] = "application/json"
        conn = self._connection(timeout_s)
        try:
            conn.request(method, url, content, sent)
            answer = conn.getresponse()
            data = answer.read()
        except BaseException:
            self._drop(conn)
            raise
        if answer.will_close:
            self._drop(conn)
        return Answer(answer.status, answer.getheaders(), data)

    def close(self) -> None:
        with self._lock:
            conns, self._all = self._all, []
        for conn in conns:
            conn.close()

    def _connection(self, timeout_s: float) -> _UnixConnection:
        conn: _UnixConnection | None = getattr(self._mine, "conn", None)
        if conn is not None and conn.sock is not None and _hung_up(conn.sock):
            self._drop(conn)  # the server closed it while idle (its keep-alive timeout)
            conn = None
        if conn is None:
            conn = _UnixConnection(self.path, timeout_s)
            self._mine.conn = conn
            with self._lock:
                self._all.append(conn)
        conn.timeout = timeout_s
        if conn.sock is not None:
            conn.sock.settimeout(timeout_s)
        return conn

    def _drop(self, conn: _UnixConnection) -> None:
        conn.close()
        if getattr(self._mine, "conn", None) is conn:
            self._mine.conn = None
        with self._lock:
            if conn in self._all:
                self._all.remove(conn)


def _hung_up(sock: socket.socket) -> bool:
    """An idle connection with something to read has been closed (or is out of step)."""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))
