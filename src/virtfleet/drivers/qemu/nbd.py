"""A minimal read-only NBD client: fixed-newstyle handshake, ``NBD_OPT_GO``, simple reads.

Owns talking the NBD wire protocol (doc/proto.md of the NBD project) to QEMU's
built-in NBD server over a unix socket, to read a point-in-time view of a disk
during a backup. Written here because no maintained NBD client is on PyPI
(Debian's ``python3-libnbd`` binds the system interpreter, not our venv). Only
what backups need: reads, no writes, no structured replies (QEMU then answers
with simple replies), no TLS (the socket is local). Must not know about QMP.
"""

from __future__ import annotations

import socket
import struct
from collections import deque
from collections.abc import Iterable, Iterator
from pathlib import Path

from virtfleet.errors import DriverError
from virtfleet.storage import qemuimg

NBDMAGIC = 0x4E42444D41474943  # "NBDMAGIC"
IHAVEOPT = 0x49484156454F5054  # "IHAVEOPT"
OPT_REPLY_MAGIC = 0x3E889045565A9
REQUEST_MAGIC = 0x25609513
SIMPLE_REPLY_MAGIC = 0x67446698
FLAG_FIXED_NEWSTYLE, FLAG_NO_ZEROES = 1, 2
OPT_GO, REP_ACK, REP_INFO, INFO_EXPORT = 7, 1, 3, 0
CMD_READ, CMD_DISC = 0, 2
MAX_READ = 32 * 2**20  # QEMU refuses requests above 32 MiB


class NBDClient:
    """One connection to one export; not thread-safe (one reader at a time)."""

    def __init__(self, path: Path, export: str, timeout_s: float = 60) -> None:
        self._sock = socket.socket(socket.AF_UNIX)
        self._sock.settimeout(timeout_s)
        self._cookie = 0
        try:
            self._sock.connect(str(path))
            # blocking with kernel timeouts: MSG_WAITALL then takes a whole reply in one call
            self._sock.settimeout(None)
            limit = struct.pack("ll", int(timeout_s), int(timeout_s % 1 * 1e6))
            for opt in (socket.SO_RCVTIMEO, socket.SO_SNDTIMEO):
                self._sock.setsockopt(socket.SOL_SOCKET, opt, limit)
            self.size = self._handshake(export)
        except (OSError, DriverError) as err:
            self._sock.close()
            raise DriverError(f"NBD export {export!r} at {path}: {err}") from err

    def _recv(self, n: int) -> bytes:
        data = self._sock.recv(n, socket.MSG_WAITALL)  # one copy: all n unless interrupted
        if len(data) == n:
            return data
        parts, got = [data], len(data)
        while got < n:
            more = self._sock.recv(n - got, socket.MSG_WAITALL)
            if not more:
                raise DriverError("NBD server closed the connection")
            parts.append(more)
            got += len(more)
        return b"".join(parts)

    def _handshake(self, export: str) -> int:
        magic, opt, flags = struct.unpack(">QQH", self._recv(18))
        if magic != NBDMAGIC or opt != IHAVEOPT or not flags & FLAG_FIXED_NEWSTYLE:
            raise DriverError("not a fixed-newstyle NBD server")
        self._sock.sendall(struct.pack(">I", FLAG_FIXED_NEWSTYLE | (flags & FLAG_NO_ZEROES)))
        name = export.encode()
        data = struct.pack(">I", len(name)) + name + struct.pack(">H", 0)
        self._sock.sendall(struct.pack(">QII", IHAVEOPT, OPT_GO, len(data)) + data)
        size: int | None = None
        while True:
            magic, _, rep, length = struct.unpack(">QIII", self._recv(20))
            payload = self._recv(length)
            if magic != OPT_REPLY_MAGIC:
                raise DriverError("bad NBD option reply")
            if rep & 0x80000000:  # an error reply carries a message
                raise DriverError(payload[4:].decode(errors="replace") or f"error {rep:#x}")
            if rep == REP_INFO and struct.unpack(">H", payload[:2])[0] == INFO_EXPORT:
                size = struct.unpack(">Q", payload[2:10])[0]
            if rep == REP_ACK:
                break
        if size is None:
            raise DriverError("the NBD server did not tell the export size")
        return size

    def read(self, offset: int, length: int) -> bytes:
        """``length`` bytes at ``offset`` (up to 32 MiB, the most QEMU serves at once)."""
        return next(self.read_ahead([(offset, length)]))

    def read_ahead(self, spans: Iterable[tuple[int, int]], depth: int = 4) -> Iterator[bytes]:
        """The bytes of each (offset, length) span in order, keeping up to ``depth`` requests
        in flight: QEMU serves them concurrently, so its reads overlap our work."""
        todo, order = iter(spans), deque[int]()
        lengths: dict[int, int] = {}
        arrived: dict[int, bytes] = {}
        try:
            while len(order) < depth and self._request(todo, order, lengths):
                pass
            while order:
                while order[0] not in arrived:
                    cookie = self._reply(lengths)
                    arrived[cookie] = self._recv(lengths.pop(cookie))
                self._request(todo, order, lengths)
                yield arrived.pop(order.popleft())
        except OSError as err:
            raise DriverError(f"NBD read failed: {err}") from err

    def _request(
        self, todo: Iterator[tuple[int, int]], order: deque[int], lengths: dict[int, int]
    ) -> bool:
        """Send the next span's read request; False when there is none."""
        span = next(todo, None)
        if span is None:
            return False
        offset, length = span
        if not 0 < length <= MAX_READ:
            raise DriverError(f"NBD read of {length} bytes: 1 byte to 32 MiB per request")
        self._cookie += 1
        self._sock.sendall(
            struct.pack(">IHHQQI", REQUEST_MAGIC, 0, CMD_READ, self._cookie, offset, length)
        )
        order.append(self._cookie)
        lengths[self._cookie] = length
        return True

    def _reply(self, lengths: dict[int, int]) -> int:
        """Read one simple reply header; the cookie of the request it answers."""
        magic, error, cookie = struct.unpack(">IIQ", self._recv(16))
        if magic != SIMPLE_REPLY_MAGIC or cookie not in lengths:
            raise DriverError("bad NBD reply")
        if error:
            raise DriverError(f"NBD read failed (error {error})")
        return int(cookie)

    def close(self) -> None:
        try:
            req = struct.pack(">IHHQQI", REQUEST_MAGIC, 0, CMD_DISC, 0, 0, 0)
            self._sock.sendall(req)
        except OSError:
            pass  # the server is gone already: nothing to say goodbye to
        finally:
            self._sock.close()

    def __enter__(self) -> NBDClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def export_ranges(path: Path, export: str, bitmap: str | None) -> list[tuple[int, int]]:
    """(start, length) of the export's ranges worth reading: those ``bitmap`` marks dirty, or
    without a bitmap those holding data (not zeros). Asks ``qemu-img map`` over NBD."""
    opts = f"driver=nbd,server.type=unix,server.path={str(path).replace(',', ',,')},export={export}"
    if bitmap:  # qemu-img's documented way to read a bitmap: dirty ranges come as "data": false
        opts += f",x-dirty-bitmap=qemu:dirty-bitmap:{bitmap}"
    want_data = bitmap is None
    return [
        (int(e["start"]), int(e["length"]))
        for e in qemuimg.map_extents(["--image-opts", opts], f"NBD export {export!r}")
        if bool(e.get("data")) == want_data
    ]
