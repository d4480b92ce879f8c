"""Host-wide leases of user-namespace id ranges: each container its own subuid/subgid range.

A container's root is host id ``first + k * size`` for a slot ``k`` no other
container on this host holds, so the root of one container is nobody in
another (no shared owner of files, no signals across, no shared limits).
The range a container got is recorded beside its layer (``owner`` file, the
layer's files are owned by it, so it stays until the layer goes), and leased
host-wide in ``<lease_dir>/<first id>`` naming that owner file, under an
``flock``: every daemon on the host uses the same leases. A lease whose owner
file is gone (or records another range) is free. Owns only these files.
"""

from __future__ import annotations

import contextlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from virtfleet.drivers.oci.bundle import IdMap
from virtfleet.errors import HostError
from virtfleet.util.locks import dir_lock

DEFAULT_LEASE_DIR = Path("/var/lib/virtfleet-id-ranges")  # persistent: layers outlive boots
FIRST_ID = 100_000  # above every login user; the QEMU uid pool sits below it
RANGE_SIZE = 65_536  # a whole 16-bit id space: what distributions expect inside
MAX_RANGES = 16_384  # up to id ~1.07e9


@dataclass(frozen=True)
class IdRanges:
    first: int = FIRST_ID
    size: int = RANGE_SIZE
    count: int = MAX_RANGES
    lease_dir: Path = DEFAULT_LEASE_DIR

    def acquire(self, owner: Path, layer: Path | None = None) -> IdMap:
        """The range recorded in ``owner`` (leased again if needed), else a free one, which
        is then recorded there. ``layer``: the container's layer; one made before ranges
        were per container keeps its range if free, else its files move to the new one.
        ``HostError`` if every range is taken."""
        owner = owner.absolute()
        with self._locked():
            recorded = current = _recorded(owner)
            if current is None and layer is not None:
                current = self._base_of(layer)
            holder = self._holder(current) if current is not None else None
            if current is not None and holder in (None, owner):
                if (recorded, holder) != (current, owner):  # rewriting costs ~2-4 ms (ext4)
                    self._record(current, owner)
                return IdMap(current, self.size)
            host_id = self._free()
            self._record(host_id, owner)
        if current is not None and layer is not None:
            shift_tree(layer, current, host_id, self.size)
        return IdMap(host_id, self.size)

    def _free(self) -> int:
        for slot in range(self.count):
            host_id = self.first + slot * self.size
            if self._holder(host_id) is None:
                return host_id
        raise HostError(f"all {self.count} container id ranges of this host are taken")

    def _record(self, host_id: int, owner: Path) -> None:
        owner.parent.mkdir(parents=True, exist_ok=True)
        _write(owner, str(host_id))
        self._lease(host_id, owner)

    def _base_of(self, layer: Path) -> int | None:
        """The range a layer's files are owned by (its ``upper`` belongs to the range's
        root), None if there is no layer or its owner starts no range."""
        try:
            uid = (layer / "upper").stat().st_uid
        except OSError:
            return None
        slot, rest = divmod(uid - self.first, self.size)
        return uid if rest == 0 and 0 <= slot < self.count else None

    def release(self, owner: Path) -> None:
        """Free the range ``owner`` holds and forget it (its layer is being removed)."""
        owner = owner.absolute()
        with self._locked():
            recorded = _recorded(owner)
            if recorded is not None and self._holder(recorded) == owner:
                (self.lease_dir / str(recorded)).unlink(missing_ok=True)
            owner.unlink(missing_ok=True)

    def _holder(self, host_id: int) -> Path | None:
        """The owner file holding ``host_id``'s range; None if free (owner gone or moved on)."""
        try:
            owner = Path((self.lease_dir / str(host_id)).read_text())
        except OSError:
            return None
        return owner if _recorded(owner) == host_id else None

    def _lease(self, host_id: int, owner: Path) -> None:
        _write(self.lease_dir / str(host_id), str(owner))

    def _locked(self) -> contextlib.AbstractContextManager[None]:
        return dir_lock(self.lease_dir)


def _recorded(owner: Path) -> int | None:
    try:
        return int(owner.read_text().strip())
    except (OSError, ValueError):
        return None


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def shift_tree(root: Path, old: int, new: int, size: int) -> None:
    """Move the owners of everything under ``root`` from range ``old`` to range ``new``
    (ids outside ``old``'s range stay), keeping setuid/setgid bits chown clears."""
    for parent, _, files in os.walk(root):
        for name in [*files, ""]:  # "": the directory itself
            path = os.path.join(parent, name) if name else parent
            st = os.lstat(path)
            uid = st.st_uid - old + new if old <= st.st_uid < old + size else st.st_uid
            gid = st.st_gid - old + new if old <= st.st_gid < old + size else st.st_gid
            if (uid, gid) == (st.st_uid, st.st_gid):
                continue
            os.lchown(path, uid, gid)
            if not stat.S_ISLNK(st.st_mode):
                os.chmod(path, stat.S_IMODE(st.st_mode))
