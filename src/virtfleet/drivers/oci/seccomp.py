"""The default seccomp profile of virtfleet containers (OCI runtime spec, config-linux.md#seccomp).

A deny list over an allow-by-default action: system containers run ordinary
distributions, so everything is allowed except the calls that reach outside the
container (kernel modules, kexec, clocks, swap, keyrings, BPF, handle-based
opens, ...). They fail with EPERM. Pure data; no I/O.
"""

from __future__ import annotations

from typing import Any

EPERM = 1
DENIED_SYSCALLS = (
    "acct",
    "add_key",
    "bpf",
    "clock_adjtime",
    "clock_settime",
    "create_module",
    "delete_module",
    "finit_module",
    "get_kernel_syms",
    "init_module",
    "ioperm",
    "iopl",
    "kexec_file_load",
    "kexec_load",
    "keyctl",
    "lookup_dcookie",
    "nfsservctl",
    "open_by_handle_at",
    "perf_event_open",
    "query_module",
    "quotactl",
    "request_key",
    "settimeofday",
    "stime",
    "swapoff",
    "swapon",
    "sysfs",
    "uselib",
    "userfaultfd",
    "vm86",
    "vm86old",
)


def default_profile() -> dict[str, Any]:
    """Allow everything but ``DENIED_SYSCALLS`` (EPERM) on x86-64 and its 32-bit ABIs."""
    return {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [
            {"names": list(DENIED_SYSCALLS), "action": "SCMP_ACT_ERRNO", "errnoRet": EPERM}
        ],
    }
