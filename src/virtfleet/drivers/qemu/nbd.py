"""A minimal read-only NBD client: fixed-newstyle handshake, ``NBD_OPT_GO``, simple reads.

Owns talking the NBD wire protocol (doc/proto.md of the NBD project) to QEMU's
built-in NBD server over a unix socket, to read a point-in-time view of a disk
during a backup. Written here because no maintained NBD client is on PyPI
(Debian's ``python3-libnbd`` binds the system interpreter, not our venv). Only
what backups need: reads, no writes, no structured replies (QEMU then answers
with simple replies), no TLS (the socket is local). Must not know about QMP.
"""

from __future__ import annotations

import json
import socket
import struct
import subprocess
from pathlib import Path

from virtfleet.errors import DriverError

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
            self.size = self._handshake(export)
        except (OSError, DriverError) as err:
            self._sock.close()
            raise DriverError(f"NBD export {export!r} at {path}: {err}") from err

    def _recv(self, n: int) -> bytes:
        buf = bytearray(n)
        view, got = memoryview(buf), 0
        while got < n:
            k = self._sock.recv_into(view[got:], n - got)
            if k == 0:
                raise DriverError("NBD server closed the connection")
            got += k
        return bytes(buf)

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
        """``length`` bytes at ``offset`` (split into requests QEMU accepts)."""
        parts = []
        while length > 0:
            step = min(length, MAX_READ)
            parts.append(self._read_one(offset, step))
            offset, length = offset + step, length - step
        return b"".join(parts) if len(parts) != 1 else parts[0]

    def _read_one(self, offset: int, length: int) -> bytes:
        self._cookie += 1
        req = struct.pack(">IHHQQI", REQUEST_MAGIC, 0, CMD_READ, self._cookie, offset, length)
        try:
            self._sock.sendall(req)
            magic, error, cookie = struct.unpack(">IIQ", self._recv(16))
            if magic != SIMPLE_REPLY_MAGIC or cookie != self._cookie:
                raise DriverError("bad NBD reply")
            if error:
                raise DriverError(f"NBD read at {offset} failed (error {error})")
            return self._recv(length)
        except OSError as err:
            raise DriverError(f"NBD read at {offset} failed: {err}") from err

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


def export_ranges(
    path: Path, export: str, bitmap: str | None, qemu_img: str = "qemu-img"
) -> list[tuple[int, int]]:
    """(start, length) of the export's ranges worth reading: those ``bitmap`` marks dirty, or
    without a bitmap those holding data (not zeros). Asks ``qemu-img map`` over NBD."""
    opts = f"driver=nbd,server.type=unix,server.path={str(path).replace(',', ',,')},export={export}"
    if bitmap:  # qemu-img's documented way to read a bitmap: dirty ranges come as "data": false
        opts += f",x-dirty-bitmap=qemu:dirty-bitmap:{bitmap}"
    proc = subprocess.run(
        [qemu_img, "map", "--output=json", "--image-opts", opts],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise DriverError(f"qemu-img map of NBD export {export!r}: {proc.stderr.strip()[-300:]}")
    want_data = bitmap is None
    return [
        (int(e["start"]), int(e["length"]))
        for e in json.loads(proc.stdout)
        if bool(e.get("data")) == want_data
    ]
