"""Real containers are kept apart: the default seccomp profile denies new user namespaces
and io_uring inside them, and each container's user namespace maps its own id range."""

from __future__ import annotations

import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from .containers import Containers, running_containers

pytestmark = pytest.mark.integration
IO_URING_SETUP = 425  # x86-64
EPERM, EFAULT = 1, 14


@pytest.fixture(scope="module")
def ct() -> Iterator[Containers]:
    yield from running_containers()


def _syscall_probe(nr: int) -> bytes:
    """A static x86-64 ELF calling syscall ``nr`` with zero arguments and exiting with the
    errno it got (0 on success): the tiny rootfs has no compiler or io_uring tool."""
    code = bytes.fromhex("b8") + struct.pack("<I", nr)  # mov eax, nr
    code += bytes.fromhex("31ff 31f6 31d2 0f05")  # xor edi/esi/edx; syscall
    code += bytes.fromhex("f7d8 89c7 b83c000000 0f05")  # neg eax; mov edi, eax; exit
    base, start = 0x400000, 64 + 56
    size = start + len(code)
    ident = b"\x7fELF\x02\x01\x01" + bytes(9)
    # ELF64 header: executable, x86-64, entry, program headers at 64, one of 56 bytes.
    fields = (ident, 2, 0x3E, 1, base + start, 64, 0, 0, 64, 56, 1, 0, 0, 0)
    header = struct.pack("<16sHHIQQQIHHHHHH", *fields)
    program = struct.pack("<IIQQQQQQ", 1, 5, 0, base, base, size, size, 0x1000)
    return header + program + code


def _install(ct: Containers, name: str, path: str, data: bytes) -> None:
    """Put an executable into the running container's root (through its overlay)."""
    target = ct.mounts / name / path.lstrip("/")
    target.write_bytes(data)
    target.chmod(0o755)


def test_user_namespaces_and_io_uring_are_denied(ct: Containers, tmp_path: Path) -> None:
    """``unshare -U`` fails with EPERM in a container, and io_uring_setup answers EPERM
    there while on the host the same probe reaches the kernel (EFAULT for its NULL args)."""
    probe = _syscall_probe(IO_URING_SETUP)
    host = tmp_path / "probe"
    host.write_bytes(probe)
    host.chmod(0o755)
    assert subprocess.run([str(host)], check=False).returncode == EFAULT
    ct.create("sec")
    out = ct.exec("sec", "unshare", "-U", "true")
    assert out.exit_code != 0 and "not permitted" in out.stderr.lower(), out
    _install(ct, "sec", "/probe", probe)
    assert ct.exec("sec", "/probe").exit_code == EPERM


def test_containers_map_disjoint_id_ranges(ct: Containers) -> None:
    """Two containers' uid and gid maps put their roots on host ids no other one maps."""
    ct.create("ida")
    ct.create("idb")
    for kind in ("uid_map", "gid_map"):
        spans = []
        for name in ("ida", "idb"):
            inner, outer, count = map(int, ct.sh(name, f"cat /proc/self/{kind}").split())
            assert inner == 0 and outer >= 100_000 and count == 65_536
            spans.append(range(outer, outer + count))
        a, b = spans
        assert a.stop <= b.start or b.stop <= a.start, (kind, a, b)
