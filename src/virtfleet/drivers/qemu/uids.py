"""A host-wide pool of unprivileged uids, one per running QEMU.

Each VM's QEMU drops to its own uid (gid the same, no supplementary groups),
so a compromised QEMU cannot signal, trace or open what another VM's QEMU
holds. The pool is shared by every daemon on the host: a uid is held by a
lease file ``<lease_dir>/<uid>`` naming the process that holds it (first the
launching daemon, then the QEMU itself), written under an ``flock``. A lease
whose holder is gone is free again, so a crash never leaks a uid for long.
Owns only the lease files; never starts or ends a process.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
from dataclasses import dataclass
from pathlib import Path

import psutil

from virtfleet.errors import HostError, InvalidInputError
from virtfleet.util.locks import dir_lock

DEFAULT_LEASE_DIR = Path("/run/virtfleet/qemu-uids")
DEFAULT_FIRST_UID = 90_000  # above distributions' UID_MAX (60000), below subuid ranges (100000)
DEFAULT_COUNT = 10_000


@dataclass(frozen=True)
class UidPool:
    """Uids ``first .. first + count - 1``, leased through files in ``lease_dir``."""

    first: int = DEFAULT_FIRST_UID
    count: int = DEFAULT_COUNT
    lease_dir: Path = DEFAULT_LEASE_DIR

    def reserve(self, vm: str) -> int:
        """Lease a free uid for ``vm`` to the calling process; ``HostError`` if none is left."""
        with self._locked():
            running = _uids_in_use()
            for uid in range(self.first, self.first + self.count):
                if uid in running or self._held(uid) or _has_account(uid):
                    continue
                self._write(uid, os.getpid(), vm)
                return uid
        raise HostError(f"no free QEMU uid left in {self.first}..{self.first + self.count - 1}")

    def hold(self, uid: int, pid: int, vm: str) -> None:
        """Hand ``uid``'s lease to process ``pid`` (the VM's QEMU, which outlives us)."""
        with self._locked():
            self._write(uid, pid, vm)

    def release(self, uid: int, pid: int) -> None:
        """Give ``uid`` back if process ``pid`` holds it (a lease taken over since stays)."""
        with self._locked():
            lease = self._read(uid)
            if lease is not None and lease[0] == pid:
                self._path(uid).unlink(missing_ok=True)

    def holder(self, uid: int) -> int | None:
        """The pid holding ``uid``, None if it is free (or its holder is gone)."""
        lease = self._read(uid)
        if lease is None or not _alive(*lease):
            return None
        return lease[0]

    # -- lease files -------------------------------------------------------------------

    def _path(self, uid: int) -> Path:
        return self.lease_dir / str(uid)

    def _locked(self) -> contextlib.AbstractContextManager[None]:
        return dir_lock(self.lease_dir)

    def _held(self, uid: int) -> bool:
        return self.holder(uid) is not None

    def _read(self, uid: int) -> tuple[int, float] | None:
        """(holder pid, its start time), None if there is no readable lease."""
        try:
            lease = json.loads(self._path(uid).read_text())
            return int(lease["pid"]), float(lease["ctime"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _write(self, uid: int, pid: int, vm: str) -> None:
        try:
            ctime = psutil.Process(pid).create_time()
        except psutil.Error:  # the holder is gone already: the uid is free
            self._path(uid).unlink(missing_ok=True)
            return
        lease = {"pid": pid, "ctime": ctime, "vm": vm}
        tmp = self._path(uid).with_suffix(".tmp")
        tmp.write_text(json.dumps(lease))
        os.replace(tmp, self._path(uid))


def parse_pool(setting: str) -> UidPool | None:
    """A pool from "FIRST:COUNT" (":COUNT" may go), the default for "", None for "off";
    anything else is an ``InvalidInputError``."""
    if setting == "off":
        return None
    if not setting:
        return UidPool()
    first, _, count = setting.partition(":")
    why = f"the QEMU uid pool must be FIRST:COUNT (both > 0) or off, not {setting!r}"
    try:
        pool = UidPool(int(first), int(count or DEFAULT_COUNT))
    except ValueError as err:
        raise InvalidInputError(why) from err
    if pool.first < 1 or pool.count < 1:  # uid 0 is root: never a VM's
        raise InvalidInputError(why)
    return pool


def _alive(pid: int, ctime: float) -> bool:
    """``pid`` runs and is the process that took the lease (same start time: no reuse)."""
    try:
        proc = psutil.Process(pid)
        return abs(proc.create_time() - ctime) < 0.5 and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _uids_in_use(proc: Path = Path("/proc")) -> set[int]:
    """Real uids of every process now: a uid someone runs as is never handed out. Read
    from ``/proc/<pid>/status`` directly (psutil's process objects doubled each start's
    ~150-process scan)."""
    found: set[int] = set()
    for entry in os.scandir(proc):
        if not entry.name.isdigit():
            continue
        try:
            with open(os.path.join(entry.path, "status"), "rb") as status:
                for line in status:
                    if line.startswith(b"Uid:"):
                        found.add(int(line.split()[1]))
                        break
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile (or unreadable): it runs as nobody now
    return found


def _has_account(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
    except KeyError:
        return False
    return True
