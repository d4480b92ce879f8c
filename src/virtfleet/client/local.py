"""The transport for the daemon's own Unix socket, on the standard library's ``http.client``.

Owns one keep-alive connection per thread to the local socket, and the cookies of
a session opened on it (a login: ``http.cookiejar``, as a browser keeps them). On
this socket httpx's layers (its URL, request and response models, connection pool
and the pure Python h11 parser) cost ~0.8 ms a call and importing httpx ~40 ms of
every command; a local call needs none of what they are for: no TLS, proxy,
redirect or HTTP/2. Must not know endpoints, or errors beyond the transport's.
"""

from __future__ import annotations

import http.client
import json
import select
import socket
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from virtfleet.client.transport import Answer

if TYPE_CHECKING:
    from http.cookiejar import CookieJar

# What fails a call on the socket itself (the caller turns it into DaemonUnavailable).
TransportFailure = (OSError, http.client.HTTPException)
COOKIE_ORIGIN = "http://virtfleet"  # the host cookies on the socket are scoped to


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

    failures: tuple[type[BaseException], ...] = TransportFailure

    def __init__(self, path: str) -> None:
        self.path = path
        self._mine = threading.local()
        self._all: list[_UnixConnection] = []
        self._lock = threading.Lock()
        self._jar: CookieJar | None = None  # made by the first Set-Cookie

    @property
    def cookies(self) -> Mapping[str, str]:
        if self._jar is None:
            return {}
        self._jar.clear_expired_cookies()
        return {cookie.name: cookie.value or "" for cookie in self._jar}

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
        sent = {**headers, **self._cookie_header(url)}
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
        if answer.getheader("Set-Cookie") is not None:
            self._keep_cookies(answer, url)
        return Answer(answer.status, answer.getheaders(), data)

    def close(self) -> None:
        with self._lock:
            conns, self._all = self._all, []
        for conn in conns:
            conn.close()

    def _cookie_header(self, url: str) -> dict[str, str]:
        if self._jar is None:
            return {}
        from urllib.request import Request

        request = Request(COOKIE_ORIGIN + url)
        self._jar.add_cookie_header(request)
        cookie = request.get_header("Cookie")
        return {"Cookie": cookie} if cookie else {}

    def _keep_cookies(self, answer: http.client.HTTPResponse, url: str) -> None:
        from http.cookiejar import CookieJar
        from urllib.request import Request

        if self._jar is None:
            self._jar = CookieJar()
        self._jar.extract_cookies(answer, Request(COOKIE_ORIGIN + url))

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
