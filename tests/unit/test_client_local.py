"""The client's transport for the daemon's own socket (client/local.py), against a small
HTTP/1.1 server on a Unix socket that counts connections and can hang up: calls share a
kept-alive connection, one closed by the server while idle is replaced, each thread has
its own, and a missing socket or a silent server is ``daemon_unavailable``."""

from __future__ import annotations

import http.server
import json
import re
import socketserver
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from virtfleet.client import ApiError, Client
from virtfleet.client import calls as calls_module
from virtfleet.client.calls import Call, raw
from virtfleet.client.local import LocalTransport


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.connections += 1

    def do_GET(self) -> None:
        self._answer(None)

    def do_PUT(self) -> None:
        length = int(self.headers["Content-Length"])
        self._answer(json.loads(self.rfile.read(length)))

    def _answer(self, body: Any) -> None:
        if self.path.startswith("/slow"):
            time.sleep(1)
        status = 404 if "missing" in self.path else 200
        reply = {"path": self.path, "body": body, "type": self.headers["Content-Type"]}
        if status == 404:
            reply = {"error": {"code": "not_found", "message": "no such thing", "status": 404}}
        data = json.dumps(reply).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if self.path.startswith("/bye"):
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


class _Server(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True
    connections = 0


@pytest.fixture
def server(tmp_path: Path) -> Iterator[_Server]:
    srv = _Server(str(tmp_path / "api.sock"), _Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv
    srv.shutdown()
    srv.server_close()


def test_calls_share_a_kept_alive_connection(server: _Server) -> None:
    local = LocalTransport(str(server.server_address))
    first = local.send("PUT", "/a", {"x": ["1", "2"], "y": "é"}, {"n": 1}, {}, 5)
    assert first.status == 200
    assert first.json() == {
        "path": "/a?x=1&x=2&y=%C3%A9",
        "body": {"n": 1},
        "type": "application/json",
    }
    assert local.send("GET", "/b", {}, None, {}, 5).json()["type"] is None
    assert server.connections == 1
    local.send("GET", "/bye", {}, None, {}, 5)  # the server says it closes
    local.send("GET", "/c", {}, None, {}, 5)
    assert server.connections == 2
    local.close()


def test_a_connection_the_server_closed_while_idle_is_replaced(server: _Server) -> None:
    local = LocalTransport(str(server.server_address))
    local.send("GET", "/a", {}, None, {}, 5)
    conn = local._mine.conn
    assert conn is not None and conn.sock is not None
    conn.sock.shutdown(2)  # as a keep-alive timeout would, seen from our side
    assert local.send("GET", "/b", {}, None, {}, 5).status == 200
    assert server.connections == 2
    local.close()


def test_each_thread_has_its_own_connection(server: _Server) -> None:
    local = LocalTransport(str(server.server_address))
    answers: list[int] = []

    def call() -> None:
        for _ in range(3):
            answers.append(local.send("GET", "/t", {}, None, {}, 5).status)

    threads = [threading.Thread(target=call) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert answers == [200] * 9 and server.connections == 3
    local.close()
    assert local._all == []


def test_errors_through_the_client(server: _Server, tmp_path: Path) -> None:
    with Client(uds_path=str(server.server_address), timeout_s=0.2) as client:
        with pytest.raises(ApiError) as err:
            client.get_instance("missing")  # GET /1.0/instances/missing: the 404 shape
        assert (err.value.code, err.value.status) == ("not_found", 404)
        assert err.value.message == "no such thing"
        with pytest.raises(ApiError) as err:
            client.call(Call("GET", "/slow", raw))
        assert err.value.code == "daemon_unavailable" and "timed out" in err.value.message
    with Client(uds_path=tmp_path / "nothing.sock") as client, pytest.raises(ApiError) as err:
        client.list_instances()
    assert err.value.code == "daemon_unavailable"


def test_every_model_a_call_names_exists() -> None:
    """Calls name their answer's model by reference (imported at the first answer): each
    reference in the client resolves to a pydantic model."""
    from pydantic import BaseModel

    from virtfleet.client.calls import model

    source = "".join(p.read_text() for p in Path(calls_module.__file__).parent.glob("*.py"))
    refs = set(re.findall(r'(?:one|many)\("([\w.]+:\w+)"\)', source))
    assert len(refs) > 20
    for ref in refs:
        assert issubclass(model(ref), BaseModel), ref
