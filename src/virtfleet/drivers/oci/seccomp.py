"""The default seccomp profile of virtfleet containers (OCI runtime spec, config-linux.md#seccomp).

A deny list over an allow-by-default action: system containers run ordinary
distributions, so everything is allowed except the calls that reach outside the
container (kernel modules, kexec, clocks, swap, keyrings, BPF, handle-based
opens, ...). They fail with EPERM. Two large kernel attack surfaces go too:
io_uring, and new user namespaces (``unshare``/``clone`` with ``CLONE_NEWUSER``;
``clone3`` hides its flags in memory a filter cannot read, so it answers ENOSYS
and the C library falls back to ``clone``, as with Docker's profile). Pure
data; no I/O.
"""

from __future__ import annotations

from typing import Any

EPERM = 1
ENOSYS = 38
CLONE_NEWUSER = 0x10000000
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
    "io_uring_enter",
    "io_uring_register",
    "io_uring_setup",
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
    """Allow everything but ``DENIED_SYSCALLS`` and new user namespaces (EPERM), and
    ``clone3`` (ENOSYS), on x86-64 and its 32-bit ABIs."""
    # x86's clone and unshare both take the flags as their first argument.
    newuser: dict[str, Any] = {"index": 0, "value": CLONE_NEWUSER, "valueTwo": CLONE_NEWUSER}
    newuser["op"] = "SCMP_CMP_MASKED_EQ"
    return {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [
            {"names": list(DENIED_SYSCALLS), "action": "SCMP_ACT_ERRNO", "errnoRet": EPERM},
            {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS},
            {
                "names": ["clone", "unshare"],
                "action": "SCMP_ACT_ERRNO",
                "errnoRet": EPERM,
                "args": [newuser],
            },
        ],
    }
