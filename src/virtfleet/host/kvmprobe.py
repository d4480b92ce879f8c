"""Decide whether KVM really works here by running one tiny guest to ``hlt``.

Owns: the ioctl numbers and struct layouts for the handful of KVM calls it
needs, the child side (``python -m virtfleet.host.kvmprobe``: open /dev/kvm,
make a VM with 2 MiB of RAM and one vCPU, run it twice to HLT -- first
real-mode ``mov al,0x42; out 0x10,al; hlt``, then 64-bit code that executes
FPU and SSE instructions, because some KVMs pass the first and fail every real
guest on the second -- printing JSON lines) and the parent side ``probe_kvm``
which starts the child, enforces a timeout and turns the outcome into a
``KvmProbe``.

Must not: cache results (callers cache), run KVM ioctls in the calling
process (a vCPU can spin in the kernel forever on broken nested setups), block
on a child that ignores SIGKILL (it is reaped by a daemon thread instead), or
import anything outside the standard library on the child side.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import mmap
import os
import platform
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the child side must import nothing but the stdlib
    from virtfleet.model.host import KvmProbe

KVM_DEVICE = "/dev/kvm"

# --- ioctl encoding (include/uapi/asm-generic/ioctl.h) ---------------------
_IOC_NONE, _IOC_WRITE, _IOC_READ = 0, 1, 2
KVMIO = 0xAE


def _ioc(direction: int, nr: int, size: int) -> int:
    return (direction << 30) | (size << 16) | (KVMIO << 8) | nr


def _io(nr: int) -> int:
    return _ioc(_IOC_NONE, nr, 0)


def _iow(nr: int, size: int) -> int:
    return _ioc(_IOC_WRITE, nr, size)


def _ior(nr: int, size: int) -> int:
    return _ioc(_IOC_READ, nr, size)


# struct kvm_userspace_memory_region: u32 slot, u32 flags, u64 gpa, u64 size, u64 uaddr
_MEM_REGION = struct.Struct("=IIQQQ")
# struct kvm_regs: rax..r15 (16 x u64), rip, rflags
_REGS = struct.Struct("=18Q")
_REGS_RIP, _REGS_RFLAGS = 16, 17
# struct kvm_sregs: 8 x kvm_segment (24 B), gdt+idt kvm_dtable (16 B each),
# cr0 cr2 cr3 cr4 cr8 efer apic_base (7 x u64), interrupt_bitmap (4 x u64)
SREGS_SIZE = 8 * 24 + 2 * 16 + 7 * 8 + 4 * 8
_CS_BASE_OFF, _CS_SELECTOR_OFF = 0, 12  # cs is the first kvm_segment: u64 base, u32 limit, u16 sel

# API doc 4.1 "KVM_GET_API_VERSION"
KVM_GET_API_VERSION = _io(0x00)
# API doc 4.2 "KVM_CREATE_VM"
KVM_CREATE_VM = _io(0x01)
# API doc 4.5 "KVM_GET_VCPU_MMAP_SIZE"
KVM_GET_VCPU_MMAP_SIZE = _io(0x04)
# API doc 4.7 "KVM_CREATE_VCPU"
KVM_CREATE_VCPU = _io(0x41)
# API doc 4.35 "KVM_SET_USER_MEMORY_REGION"
KVM_SET_USER_MEMORY_REGION = _iow(0x46, _MEM_REGION.size)
# API doc 4.10 "KVM_RUN"
KVM_RUN = _io(0x80)
# API doc 4.11 "KVM_GET_REGS"
KVM_GET_REGS = _ior(0x81, _REGS.size)
# API doc 4.12 "KVM_SET_REGS"
KVM_SET_REGS = _iow(0x82, _REGS.size)
# API doc 4.13 "KVM_GET_SREGS"
KVM_GET_SREGS = _ior(0x83, SREGS_SIZE)
# API doc 4.14 "KVM_SET_SREGS"
KVM_SET_SREGS = _iow(0x84, SREGS_SIZE)

KVM_API_VERSION = 12
# API doc 5 "The kvm_run structure": u32 exit_reason at offset 8, exit union at 32
KVM_EXIT_IO, KVM_EXIT_HLT = 2, 5
_RUN_EXIT_REASON_OFF, _RUN_UNION_OFF = 8, 32
_RUN_IO = struct.Struct("=BBHIQ")  # direction, size, port, count, data_offset

_EXIT_NAMES = {
    0: "KVM_EXIT_UNKNOWN",
    1: "KVM_EXIT_EXCEPTION",
    6: "KVM_EXIT_MMIO",
    8: "KVM_EXIT_SHUTDOWN",
    9: "KVM_EXIT_FAIL_ENTRY",
    17: "KVM_EXIT_INTERNAL_ERROR",
}
_INTERNAL_ERRORS = {1: "emulation failure", 2: "simultaneous exceptions", 3: "delivery event"}

# Guest RAM at GPA 0: code pages, then an identity-mapping page table for long mode.
GUEST_MEM_SIZE = 0x200000
PROBE_PORT = 0x10
# mov al,0x42; out 0x10,al; hlt
REAL_CODE_ADDR, REAL_CODE, REAL_VALUE = 0x1000, bytes.fromhex("b042e610f4"), 0x42
# fwait; fninit; xorps xmm0,xmm0; mov al,0x43; out 0x10,al; hlt -- every real guest
# kernel runs FPU/SSE code within milliseconds, and some broken KVMs cannot.
LONG_CODE_ADDR, LONG_CODE, LONG_VALUE = 0x1100, bytes.fromhex("9bdbe30f57c0b043e610f4"), 0x43
SPIN_CODE_ADDR, SPIN_CODE = 0x1200, bytes.fromhex("ebfe")  # jmp $ (tests the timeout path)
PML4_ADDR, PDPT_ADDR, PD_ADDR = 0x2000, 0x3000, 0x4000
_PTE_P, _PTE_RW, _PTE_PS = 0x1, 0x2, 0x80
# struct kvm_segment: u64 base, u32 limit, u16 selector, u8 type present dpl db s l g avl
# unusable padding
_SEGMENT = struct.Struct("=QIHBBBBBBBBBB")
_SREGS_CR_OFF = 8 * 24 + 2 * 16  # cr0 cr2 cr3 cr4 cr8 efer follow gdt/idt
_CR0_LONG = 0x1 | 0x2 | 0x10 | 0x20 | 0x10000 | 0x80000000  # PE MP ET NE WP PG
_CR4_LONG = 0x20 | 0x200 | 0x400  # PAE OSFXSR OSXMMEXCPT
_EFER_LONG = 0x100 | 0x400  # LME LMA
_MAX_EXITS = 16


class _Phase:
    """One guest program: where it starts, in which CPU mode, what it must OUT."""

    def __init__(self, name: str, rip: int, long_mode: bool, expect: list[int]) -> None:
        self.name, self.rip, self.long_mode, self.expect = name, rip, long_mode, expect


PHASES = (
    _Phase("real-mode", REAL_CODE_ADDR, False, [REAL_VALUE]),
    _Phase("64-bit FPU/SSE", LONG_CODE_ADDR, True, [LONG_VALUE]),
)
SPIN_PHASES = (_Phase("spin", SPIN_CODE_ADDR, False, []),)


# --- child side --------------------------------------------------------------


class _ProbeFailure(Exception):
    def __init__(self, **fields: Any) -> None:
        super().__init__(fields.get("error", ""))
        self.fields = fields


def _emit(**fields: Any) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def _guest_image() -> mmap.mmap:
    mem = mmap.mmap(-1, GUEST_MEM_SIZE, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    for addr, code in ((REAL_CODE_ADDR, REAL_CODE), (LONG_CODE_ADDR, LONG_CODE)):
        mem[addr : addr + len(code)] = code
    mem[SPIN_CODE_ADDR : SPIN_CODE_ADDR + len(SPIN_CODE)] = SPIN_CODE
    struct.pack_into("=Q", mem, PML4_ADDR, PDPT_ADDR | _PTE_P | _PTE_RW)
    struct.pack_into("=Q", mem, PDPT_ADDR, PD_ADDR | _PTE_P | _PTE_RW)
    struct.pack_into("=Q", mem, PD_ADDR, 0 | _PTE_P | _PTE_RW | _PTE_PS)  # 2 MiB at 0
    return mem


def _setup_vm(kvm_fd: int) -> tuple[int, mmap.mmap]:
    """KVM_CREATE_VM and map the guest image as slot 0 at guest address 0."""
    _emit(stage="KVM_CREATE_VM")
    vm_fd = fcntl.ioctl(kvm_fd, KVM_CREATE_VM, 0)
    mem = _guest_image()
    uaddr = ctypes.addressof(ctypes.c_char.from_buffer(mem))
    _emit(stage="KVM_SET_USER_MEMORY_REGION")
    region = _MEM_REGION.pack(0, 0, 0, GUEST_MEM_SIZE, uaddr)
    fcntl.ioctl(vm_fd, KVM_SET_USER_MEMORY_REGION, region)
    return vm_fd, mem


def _create_vcpu(kvm_fd: int, vm_fd: int) -> tuple[int, mmap.mmap]:
    """KVM_CREATE_VCPU and map its kvm_run area."""
    _emit(stage="KVM_CREATE_VCPU")
    vcpu_fd = fcntl.ioctl(vm_fd, KVM_CREATE_VCPU, 0)
    run_size = fcntl.ioctl(kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0)
    run = mmap.mmap(vcpu_fd, run_size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    return vcpu_fd, run


def _long_mode_sregs(sregs: bytearray) -> None:
    """Flat 64-bit code/data segments, paging via PML4_ADDR, FPU/SSE enabled."""
    code = _SEGMENT.pack(0, 0xFFFFFFFF, 0x8, 11, 1, 0, 0, 1, 1, 1, 0, 0, 0)
    data = _SEGMENT.pack(0, 0xFFFFFFFF, 0x10, 3, 1, 0, 1, 1, 0, 1, 0, 0, 0)
    sregs[0:24] = code  # cs, then ds es fs gs ss
    for i in range(1, 6):
        sregs[i * 24 : (i + 1) * 24] = data
    crs = (_CR0_LONG, 0, PML4_ADDR, _CR4_LONG, 0, _EFER_LONG)
    struct.pack_into("=6Q", sregs, _SREGS_CR_OFF, *crs)


def _enter_phase(vcpu_fd: int, phase: _Phase) -> None:
    """KVM_SET_SREGS/KVM_SET_REGS so the vCPU starts the phase's code."""
    sregs = bytearray(SREGS_SIZE)
    fcntl.ioctl(vcpu_fd, KVM_GET_SREGS, sregs, True)
    if phase.long_mode:
        _long_mode_sregs(sregs)
    else:
        struct.pack_into("=Q", sregs, _CS_BASE_OFF, 0)
        struct.pack_into("=H", sregs, _CS_SELECTOR_OFF, 0)
    fcntl.ioctl(vcpu_fd, KVM_SET_SREGS, bytes(sregs))
    regs = [0] * 18
    regs[_REGS_RIP], regs[_REGS_RFLAGS] = phase.rip, 0x2
    fcntl.ioctl(vcpu_fd, KVM_SET_REGS, _REGS.pack(*regs))


def _bad_exit(phase: _Phase, reason: int, run: mmap.mmap) -> _ProbeFailure:
    name = _EXIT_NAMES.get(reason, f"exit reason {reason}")
    fields: dict[str, Any] = {"stage": "KVM_RUN", "phase": phase.name, "exit": name}
    if reason == 17:  # API doc 5 "KVM_EXIT_INTERNAL_ERROR": u32 suberror first
        (sub,) = struct.unpack_from("=I", run, _RUN_UNION_OFF)
        fields["suberror"] = _INTERNAL_ERRORS.get(sub, f"suberror {sub}")
    return _ProbeFailure(error=f"{name} instead of HLT", **fields)


def _run_phase(vcpu_fd: int, run: mmap.mmap, phase: _Phase) -> float:
    """KVM_RUN until HLT and return the milliseconds it took; OUTs are checked."""
    _enter_phase(vcpu_fd, phase)
    _emit(stage="KVM_RUN", phase=phase.name)
    seen: list[int] = []
    start = time.perf_counter()
    for _ in range(_MAX_EXITS):
        fcntl.ioctl(vcpu_fd, KVM_RUN, 0)
        (reason,) = struct.unpack_from("=I", run, _RUN_EXIT_REASON_OFF)
        if reason == KVM_EXIT_HLT:
            if seen != phase.expect:
                raise _ProbeFailure(stage="KVM_RUN", phase=phase.name, error=f"guest wrote {seen}")
            return (time.perf_counter() - start) * 1000.0
        if reason != KVM_EXIT_IO:
            raise _bad_exit(phase, reason, run)
        _dir, size, port, _count, data_off = _RUN_IO.unpack_from(run, _RUN_UNION_OFF)
        if port == PROBE_PORT and size == 1:
            seen.append(run[data_off])
    raise _ProbeFailure(stage="KVM_RUN", phase=phase.name, error=f"no HLT in {_MAX_EXITS} exits")


def _probe_with(kvm_fd: int, phases: tuple[_Phase, ...]) -> dict[str, Any]:
    version = fcntl.ioctl(kvm_fd, KVM_GET_API_VERSION, 0)
    if version != KVM_API_VERSION:
        raise _ProbeFailure(stage="KVM_GET_API_VERSION", error=f"API version {version} != 12")
    vm_fd, _mem = _setup_vm(kvm_fd)
    vcpu_fd, run = _create_vcpu(kvm_fd, vm_fd)
    run_ms = {phase.name: _run_phase(vcpu_fd, run, phase) for phase in phases}
    return {"ok": True, "run_ms": run_ms}


def run_child(phases: tuple[_Phase, ...] = PHASES) -> dict[str, Any]:
    """The whole probe, in this process. Only call it in a disposable child."""
    _emit(stage="open")
    try:
        kvm_fd = os.open(KVM_DEVICE, os.O_RDWR | os.O_CLOEXEC)
    except OSError as err:
        return {"ok": False, "stage": "open", "errno": err.errno, "error": err.strerror}
    try:
        return _probe_with(kvm_fd, phases)
    except _ProbeFailure as failure:
        return {"ok": False, **failure.fields}
    except OSError as err:
        return {"ok": False, "stage": "ioctl", "errno": err.errno, "error": str(err)}
    finally:
        os.close(kvm_fd)


# --- parent side -------------------------------------------------------------


def _child_env() -> dict[str, str]:
    """Environment that lets ``-m virtfleet.host.kvmprobe`` import this very tree."""
    env = dict(os.environ)
    src_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src_root, env.get("PYTHONPATH")) if p)
    return env


def _reap_in_background(proc: subprocess.Popen[bytes]) -> None:
    """wait() for a killed child without blocking the caller: it may stay in-kernel."""

    def reap() -> None:
        with contextlib.suppress(Exception):
            proc.wait()

    threading.Thread(target=reap, name=f"kvmprobe-reap-{proc.pid}", daemon=True).start()


def _parse_lines(raw: bytes | None) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for line in (raw or b"").decode(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            obj = json.loads(line)
            if isinstance(obj, dict):
                out.append(obj)
    return out


def _last_stage(lines: list[dict[str, Any]]) -> str:
    stages = [obj for obj in lines if "stage" in obj and "ok" not in obj]
    if not stages:
        return "start-up"
    last = stages[-1]
    return f"{last['stage']} ({last['phase']})" if "phase" in last else str(last["stage"])


def _run_probe_child(timeout_s: float, args: list[str]) -> tuple[list[dict[str, Any]], bool]:
    """Start the child; return its JSON lines and whether it timed out (then killed)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "virtfleet.host.kvmprobe", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=_child_env(),
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout_s)
        return _parse_lines(out), False
    except subprocess.TimeoutExpired as exc:
        partial = exc.output if isinstance(exc.output, bytes) else None
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        if proc.stdout is not None:
            proc.stdout.close()
        _reap_in_background(proc)
        return _parse_lines(partial), True


def _describe_failure(result: dict[str, Any], lines: list[dict[str, Any]]) -> str:
    if result.get("stage") == "open" and result.get("errno") in (1, 13):
        return f"permission denied opening {KVM_DEVICE}; using TCG"
    if result.get("exit"):
        detail = f"{result['exit']}" + (f", {result['suberror']}" if "suberror" in result else "")
        return (
            f"test vCPU failed on {result.get('phase', '?')} code ({detail}) instead of "
            "reaching HLT: real guests would stop at boot; using TCG"
        )
    stage = _last_stage(lines) if result.get("stage") == "ioctl" else result.get("stage", "?")
    return f"{stage} failed: {result.get('error', 'unknown error')}; using TCG"


def _interpret(lines: list[dict[str, Any]], timed_out: bool, timeout_s: float) -> tuple[bool, str]:
    """Turn the child's JSON lines into (usable, plain-language reason)."""
    stage = _last_stage(lines)
    if timed_out:
        if stage.startswith("KVM_RUN"):
            return False, (
                f"KVM_RUN did not complete within {timeout_s:.1f} s: "
                "vCPUs hang on this host; using TCG"
            )
        return False, f"{stage} did not complete within {timeout_s:.1f} s; using TCG"
    results = [obj for obj in lines if "ok" in obj]
    if not results:
        return False, f"probe child died during {stage}; using TCG"
    if not results[-1]["ok"]:
        return False, _describe_failure(results[-1], lines)
    total = sum(float(ms) for ms in dict(results[-1].get("run_ms") or {}).values())
    return True, f"vCPU ran to HLT in {total:.1f} ms (real-mode and 64-bit FPU/SSE code)"


def run_probe(timeout_s: float, child_args: list[str] | None = None) -> KvmProbe:
    """probe_kvm with extra child arguments (``["--spin"]`` exercises the timeout path)."""
    from virtfleet.model.host import KvmProbe  # lazy: the child side stays stdlib-only

    start = time.monotonic()

    def done(present: bool, usable: bool, reason: str) -> KvmProbe:
        ms = (time.monotonic() - start) * 1000.0
        return KvmProbe(device_present=present, usable=usable, reason=reason, elapsed_ms=ms)

    if not os.path.exists(KVM_DEVICE):
        return done(False, False, f"{KVM_DEVICE} missing")
    if platform.machine() not in ("x86_64", "AMD64", "i686", "i386"):
        return done(True, False, f"vCPU probe only supports x86 hosts, not {platform.machine()}")
    if not os.access(KVM_DEVICE, os.R_OK | os.W_OK):
        return done(True, False, f"permission denied: {KVM_DEVICE} needs read+write access")
    try:
        lines, timed_out = _run_probe_child(timeout_s, child_args or [])
    except OSError as err:
        return done(True, False, f"could not start probe child: {err}")
    usable, reason = _interpret(lines, timed_out, timeout_s)
    return done(True, usable, reason)


def probe_kvm(timeout_s: float = 3.0) -> KvmProbe:
    """Run one vCPU to HLT in a child process and say whether KVM is usable.

    Returns within about ``timeout_s`` plus interpreter start-up, whatever the
    kernel does. A child that ignores SIGKILL is left to a daemon reaper thread.
    """
    return run_probe(timeout_s)


def _main(argv: list[str]) -> int:
    result = run_child(SPIN_PHASES if "--spin" in argv else PHASES)
    _emit(**result)
    return 0 if result.get("ok") else 1


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
