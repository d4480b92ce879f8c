"""Helpers for tests that check data inside a tiny guest through its serial shell."""

from __future__ import annotations

import re
import secrets

from virtfleet.client.calls import Call
from virtfleet.model.operation import Operation

from .conftest import Daemon, wait_for


def guest_sum(d: Daemon, vm: str, path: str, timeout_s: float = 60) -> str:
    """sha256 of ``path`` as the guest reads it (page cache dropped: really from the disk)."""
    tag = f"S{secrets.token_hex(4)}"
    d.type_line(vm, f"sync; echo 3 > /proc/sys/vm/drop_caches; echo {tag}=$(sha256sum {path})")
    pattern = re.compile(rf"^{tag}=([0-9a-f]{{64}})", re.MULTILINE)
    wait_for(lambda: pattern.search(d.serial_log(vm)) is not None, timeout_s, f"{tag} of {vm}")
    found = pattern.search(d.serial_log(vm))
    assert found is not None
    return found.group(1)


def guest_run(d: Daemon, vm: str, command: str, timeout_s: float = 60) -> None:
    """Run ``command`` in the guest and wait until it finished (and its writes are synced)."""
    tag = f"D{secrets.token_hex(4)}"
    d.type_line(vm, f"{command}; sync; echo {tag}=done")
    wait_for(
        lambda: f"{tag}=done" in d.serial_log(vm).replace(f"echo {tag}=done", ""),
        timeout_s,
        f"{command!r} in {vm}",
    )


def write_random(d: Daemon, vm: str, path: str, kib: int, seek_kib: int = 0) -> None:
    cmd = f"dd if=/dev/urandom of={path} bs=64k count={kib // 64} seek={seek_kib // 64}"
    guest_run(d, vm, f"{cmd} conv=notrunc 2>/dev/null")


def run_op(d: Daemon, call: Call[Operation], timeout_s: float = 300) -> Operation:
    op = d.client.call(call)
    return d.client.wait_operation(op.id, timeout_s=timeout_s)
