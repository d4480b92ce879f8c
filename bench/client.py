"""The Python client's round trip vs a bare HTTP/1.1 request on the daemon's Unix socket.

GET /1.0/instances (one stopped VM exists), through ``virtfleet.client.Client``
(what the CLI and scripts use) and through a bare keep-alive socket that sends the
request bytes and reads the answer (what the server alone costs), interleaved, with
BENCH_GAP_S (default 10 ms) between calls: a script's calls, not a tight loop (back to
back, everything stays in the CPU's caches and both arms look faster).
Usage: .venv/bin/python bench/client.py [CALLS]
"""

from __future__ import annotations

import os
import socket
import sys
import time

from _daemon import BenchDaemon, report

GAP_S = float(os.environ.get("BENCH_GAP_S", "0.01"))
REQUEST = b"GET /1.0/instances HTTP/1.1\r\nHost: virtfleet\r\nAccept: application/json\r\n\r\n"


def bare_get(sock: socket.socket) -> float:
    t0 = time.perf_counter()
    sock.sendall(REQUEST)
    head, body = b"", b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(65536)
    head, _, body = head.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += sock.recv(65536)
    return time.perf_counter() - t0


def client_get(d: BenchDaemon) -> float:
    t0 = time.perf_counter()
    d.client.list_instances()
    return time.perf_counter() - t0


def main() -> None:
    calls = int(sys.argv[1]) if len(sys.argv) > 1 else 500
    d = BenchDaemon()
    try:
        d.client.create_instance({"name": "c", "image": "tiny"}, False)
        ours: list[float] = []
        bare: list[float] = []
        for _ in range(calls):
            # A fresh bare connection every 100 calls: the server closes idle ones after 5 s.
            with socket.socket(socket.AF_UNIX) as sock:
                sock.connect(str(d.data_dir / "api.sock"))
                for i in range(min(100, calls - len(ours))):
                    for which in (0, 1) if i % 2 == 0 else (1, 0):
                        time.sleep(GAP_S)
                        if which == 0:
                            ours.append(client_get(d))
                        else:
                            bare.append(bare_get(sock))
            if len(ours) >= calls:
                break
        ms = [t * 1000 for t in ours], [t * 1000 for t in bare]
        report("GET /1.0/instances, client vs bare HTTP/1.1", *ms, unit="ms")
    finally:
        d.close()


if __name__ == "__main__":
    main()
