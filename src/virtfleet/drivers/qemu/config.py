"""QEMU configuration as data: ``(InstanceSpec, LaunchContext, RunPaths) -> argv``.

A pure function built from small section builders (machine, cpu, memory,
firmware flash, sandbox, QMP, serial, display (VGA + VNC on a Unix socket), disks, NICs,
paravirtual extras), golden-tested in tests/unit/test_qemu_config.py. It must
not touch the filesystem or processes; launching is process.py's job.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from virtfleet.drivers.base import LaunchContext, UefiFiles
from virtfleet.drivers.qemu.uids import UidPool
from virtfleet.model.instance import Accel, DeviceModel, GuestOs, InstanceSpec

# Bounds the TCG translation cache: QEMU's default (~70 MiB resident after a small
# guest's boot) is most of its per-VM overhead under binary translation. 32 MiB costs no
# boot CPU beyond the noise; 24 and 16 MiB do (retranslation after flushes; measured in
# docs/benchmarks.md, issue 26 item 5), hence this value and a host setting.
TCG_TB_SIZE_MIB = 32
VGA_MEM_MIB = 4
SANDBOX = "on,obsolete=deny,elevateprivileges=allow,spawn=deny,resourcecontrol=deny"
HOSTNAME_FW_CFG = "opt/virtfleet/hostname"
# Empty pcie-root-ports a q35 VM boots with, so disks and NICs can be hot-added
# (PCIe hot-plug needs a port per device); every non-boot disk and NIC sits on its
# own port as well, so it can be hot-removed (pcie.0 endpoints cannot).
SPARE_HOTPLUG_PORTS = 8
# A backing chain below a disk's top file, nearest first: (file, format) (backing.py).
Chain = Sequence[tuple[Path, str]]


@dataclass(frozen=True)
class RunPaths:
    """Per-instance runtime files, all inside the instance's run directory."""

    root: Path

    @property
    def qmp(self) -> Path:
        return self.root / "qmp.sock"

    @property
    def serial(self) -> Path:
        return self.root / "serial.sock"

    @property
    def serial_log(self) -> Path:
        return self.root / "serial.log"

    @property
    def vnc(self) -> Path:
        return self.root / "vnc.sock"

    @property
    def qga(self) -> Path:
        return self.root / "qga.sock"

    @property
    def pidfile(self) -> Path:
        return self.root / "qemu.pid"

    @property
    def stderr(self) -> Path:
        return self.root / "qemu.log"

    @property
    def qmp_log(self) -> Path:
        return self.root / "qmp.log"

    @property
    def record(self) -> Path:
        return self.root / "runtime.json"

    @property
    def swtpm(self) -> Path:
        """The TPM emulator's control socket: made by us, served by swtpm, used by QEMU."""
        return self.root / "swtpm.sock"

    @property
    def swtpm_log(self) -> Path:
        return self.root / "swtpm.log"

    @property
    def jail(self) -> Path:
        """The empty directory QEMU chroots into once it has opened everything."""
        return self.root / "jail"


@dataclass(frozen=True)
class QemuOptions:
    """Host-level choices that are not part of the instance spec."""

    binary: str = "qemu-system-x86_64"
    runas: str | None = None  # one shared user, when there is no uid pool
    uids: UidPool | None = None  # each VM its own uid from this pool (and a chroot)
    sandbox: bool = True
    tb_size_mib: int = TCG_TB_SIZE_MIB  # 0 = QEMU's own default
    aio: str = "threads"  # disk I/O engine of the file nodes: "io_uring" where usable (aio.py)


def build_argv(
    spec: InstanceSpec,
    ctx: LaunchContext,
    paths: RunPaths,
    opts: QemuOptions,
    uid: int | None = None,
    qmp_fd: int | None = None,
    chains: Mapping[str, Chain] | None = None,
) -> list[str]:
    """The full QEMU command line for ``spec``; same inputs, same output. ``uid``: the VM's
    own unprivileged uid (then QEMU also chroots into ``paths.jail``); else ``opts.runas``.
    ``qmp_fd``: a listening socket QEMU inherits for QMP (else it makes ``paths.qmp``).
    ``chains``: each disk's backing files (else QEMU opens them itself, with its defaults)."""
    return [
        opts.binary,
        *_base(spec, paths, opts),
        *_machine(spec, ctx, opts),
        *_firmware(ctx.uefi),
        *_cpu(spec, ctx),
        *_memory(spec),
        *_sandbox(opts, paths, uid),
        *_qmp(paths, qmp_fd),
        *_serial(paths),
        *_display(paths),
        *_hotplug_ports(spec),
        *_disks(spec, ctx, chains or {}, opts.aio),
        *_nics(spec, ctx),
        *_paravirt(spec),
        *_identity(ctx),
        *_cidata(spec, ctx),
        *_driver_iso(ctx),
        *_guest_agent(spec, paths),
        *_tpm(ctx, paths),
    ]


def _base(spec: InstanceSpec, paths: RunPaths, opts: QemuOptions) -> list[str]:
    args = ["-name", f"guest={spec.name},debug-threads=on", "-nodefaults", "-no-user-config"]
    args += ["-uuid", spec.uuid] if spec.uuid else []  # the SMBIOS system UUID
    return [*args, "-display", "none", "-msg", "timestamp=on", "-pidfile", str(paths.pidfile)]


def _machine(spec: InstanceSpec, ctx: LaunchContext, opts: QemuOptions) -> list[str]:
    machine = spec.machine
    if ctx.uefi is not None:
        machine += ",pflash0=fw-code,pflash1=fw-vars"
        # Secure Boot's variables are only safe from the guest OS behind SMM (OVMF's SB build
        # refuses to boot without it).
        machine += ",smm=on" if ctx.uefi.secure else ""
    if ctx.accel is Accel.KVM:
        return ["-machine", machine, "-accel", "kvm"]
    # A hot-added vCPU needs a free TCG code region; with a bounded cache the boot vCPUs
    # may hold them all and QEMU 10 aborts (tcg/region.c assertion, measured on a
    # re-plug): VMs that can hot-plug vCPUs keep QEMU's default cache.
    hotplug = (spec.max_vcpus or spec.vcpus) > spec.vcpus
    tcg = f"tcg,tb-size={opts.tb_size_mib}" if opts.tb_size_mib and not hotplug else "tcg"
    return ["-machine", machine, "-accel", tcg]


def _firmware(uefi: UefiFiles | None) -> list[str]:
    """OVMF as two flash chips: the shared code read-only, the VM's own variable store."""
    if uefi is None:
        return []
    code = {"driver": "file", "filename": str(uefi.code), "read-only": True}
    store = {"driver": "file", "filename": str(uefi.vars)}
    args = [
        "-blockdev",
        _json({"driver": "raw", "node-name": "fw-code", "read-only": True, "file": code}),
        "-blockdev",
        _json({"driver": "raw", "node-name": "fw-vars", "file": store}),
    ]
    # Only SMM code may then write the flash: the guest OS cannot rewrite the key databases.
    secure = ["-global", "driver=cfi.pflash01,property=secure,value=on"]
    return args + secure if uefi.secure else args


# Hyper-V enlightenments Windows uses when it finds them (KVM implements them; TCG does
# not, and QEMU refuses most of them there): fewer exits for timers, IPIs and spinlocks.
HYPERV = (
    "hv_relaxed,hv_vapic,hv_spinlocks=0x1fff,hv_vpindex,hv_runtime,hv_synic,hv_stimer,"
    "hv_time,hv_frequencies"
)


def _cpu(spec: InstanceSpec, ctx: LaunchContext) -> list[str]:
    model = "host" if ctx.accel is Accel.KVM else "max"
    if ctx.accel is Accel.KVM and spec.os is GuestOs.WINDOWS:
        model += f",{HYPERV}"
    max_vcpus = spec.max_vcpus or spec.vcpus
    args = ["-cpu", model, "-smp", f"cpus={spec.vcpus},maxcpus={max_vcpus}"]
    # Windows keeps the hardware clock in local time, Linux in UTC (QEMU's default).
    return args + (["-rtc", "base=localtime"] if spec.os is GuestOs.WINDOWS else [])


def _memory(spec: InstanceSpec) -> list[str]:
    # The balloon starts the guest at its boot RAM; the agent then sets memory_mib.
    # Emulated devices have no balloon: the guest gets memory_mib itself.
    virtio = spec.device_model is DeviceModel.VIRTIO
    return ["-m", f"{spec.boot_memory_mib if virtio else spec.memory_mib}M"]


def _sandbox(opts: QemuOptions, paths: RunPaths, uid: int | None) -> list[str]:
    # Dropping privileges with elevateprivileges=deny kills QEMU silently; once QEMU
    # runs unprivileged, spawn=deny already blocks every way back to root.
    # (-runas was removed in QEMU 9.x; -run-with user= replaces it.)
    args = ["-sandbox", SANDBOX] if opts.sandbox else []
    if uid is not None:
        # QEMU opens every file of argv as root, then chroots and drops to uid:gid (no
        # supplementary groups); later files come as descriptors, so it needs no path.
        return [*args, "-run-with", f"user={uid}:{uid},chroot={_opt(paths.jail)}"]
    return [*args, "-run-with", f"user={opts.runas}"] if opts.runas else args


def _qmp(paths: RunPaths, fd: int | None = None) -> list[str]:
    # An inherited listening socket (fd=) accepts from the moment of exec: no connect polling.
    where = f"fd={fd}" if fd is not None else f"path={_opt(paths.qmp)}"
    return [
        "-chardev",
        f"socket,id=qmp,{where},server=on,wait=off",
        "-mon",
        "chardev=qmp,mode=control",
    ]


def _serial(paths: RunPaths) -> list[str]:
    # logfile= keeps the console history even while no client is attached.
    chardev = (
        f"socket,id=serial0,path={_opt(paths.serial)},server=on,wait=off,"
        f"logfile={_opt(paths.serial_log)},logappend=on"
    )
    return ["-chardev", chardev, "-serial", "chardev:serial0"]


def _display(paths: RunPaths) -> list[str]:
    # Std VGA shows SeaBIOS/syslinux/vgacon text on pc and q35 alike; 4 MiB of video
    # memory holds 1024x768x32, not the 16 MiB default. VNC only on a Unix socket.
    return ["-device", f"VGA,id=video0,vgamem_mb={VGA_MEM_MIB}", "-vnc", f"unix:{_opt(paths.vnc)}"]


def port_of(spec: InstanceSpec) -> dict[str, str]:
    """The root port each hot-removable device sits on ("disk:NAME"/"nic:NAME" -> "rpN")."""
    if spec.device_model is not DeviceModel.VIRTIO:
        return {}
    keys = [f"disk:{d.name}" for d in spec.disks if not d.boot]
    keys += [f"nic:{n}" for n in spec.nic_names]
    return {key: f"rp{i}" for i, key in enumerate(keys)}


def _hotplug_ports(spec: InstanceSpec) -> list[str]:
    if spec.device_model is not DeviceModel.VIRTIO:
        return []  # i440fx: ACPI hot-plug on pci.0 itself, no ports needed
    args: list[str] = []
    for i in range(len(port_of(spec)) + SPARE_HOTPLUG_PORTS):
        # Eight functions per slot from 0x10 up, as multifunction root ports.
        addr = f"{0x10 + i // 8:#x}.{i % 8}" + (",multifunction=on" if i % 8 == 0 else "")
        args += ["-device", f"pcie-root-port,id=rp{i},bus=pcie.0,chassis={i + 1},addr={addr}"]
    return args


def file_node(filename: str, aio: str = "threads", **options: object) -> dict[str, object]:
    """A ``file`` block node that keeps the host page cache when QEMU activates it. QEMU
    drops an image's whole cache (``posix_fadvise(DONTNEED)``) on every activation, i.e.
    in every memory snapshot's pause (the ``cont``), for migrations over shared storage;
    virtfleet's images are local files only this QEMU writes (migration copies them).
    ``aio="io_uring"``: no hand-off to a worker thread per request (see aio.py)."""
    return {"driver": "file", "filename": filename, "drop-cache": False, "aio": aio, **options}


def _backing(chain: Chain, aio: str) -> dict[str, object] | None:
    """The backing files as nested read-only nodes (so they take ``file_node``'s options)."""
    below: dict[str, object] | None = None
    for path, fmt in reversed(chain):
        file = file_node(str(path), aio)
        node: dict[str, object] = {"driver": fmt, "read-only": True, "file": file}
        below = {**node, "backing": below} if fmt == "qcow2" else node
    return below


def _disks(
    spec: InstanceSpec, ctx: LaunchContext, chains: Mapping[str, Chain], aio: str
) -> list[str]:
    args: list[str] = []
    for index, disk in enumerate(spec.disks):
        node = f"disk-{disk.name}"
        blockdev: dict[str, object] = {
            "driver": "qcow2",
            "node-name": node,
            "file": file_node(str(ctx.disks[disk.name]), aio),
        }
        if backing := _backing(chains.get(disk.name, ()), aio):
            blockdev["backing"] = backing
        args += ["-blockdev", json.dumps(blockdev, separators=(",", ":"))]
        args += ["-device", _disk_device(spec, node, disk.name, index, disk.boot)]
    return args


def _disk_device(spec: InstanceSpec, node: str, name: str, index: int, boot: bool) -> str:
    boot_opt = ",bootindex=1" if boot else ""
    if spec.device_model is DeviceModel.VIRTIO:
        port = port_of(spec).get(f"disk:{name}")
        bus = f",bus={port}" if port else ""
        return f"virtio-blk-pci,drive={node},id=dev-{name}{bus}{boot_opt}"
    # i440fx IDE: two channels with two units each.
    return f"ide-hd,drive={node},id=dev-{name},bus=ide.{index // 2},unit={index % 2}{boot_opt}"


_NIC_DEVICES = {
    "virtio": "virtio-net-pci",
    "e1000": "e1000",
    "vmxnet3": "vmxnet3",
    "rtl8139": "rtl8139",
}


def _nics(spec: InstanceSpec, ctx: LaunchContext) -> list[str]:
    args: list[str] = []
    default = "virtio" if spec.device_model is DeviceModel.VIRTIO else "e1000"
    ports = port_of(spec)
    for index, (name, nic) in enumerate(zip(spec.nic_names, spec.nics, strict=True)):
        if nic.mode == "network":
            # The agent made the tap (root) before launch; QEMU only opens it, no scripts.
            netdev = f"tap,id=net{index},ifname={ctx.taps[index]},script=no,downscript=no"
        else:
            netdev = f"user,id=net{index},restrict={'on' if nic.restrict else 'off'}"
        args += ["-netdev", netdev]
        mac = f",mac={nic.mac}" if nic.mac else ""
        bus = f",bus={ports[f'nic:{name}']}" if f"nic:{name}" in ports else ""
        device = _NIC_DEVICES[nic.model or default]
        args += ["-device", f"{device},netdev=net{index},id={name}{bus}{mac}"]
    return args


def _paravirt(spec: InstanceSpec) -> list[str]:
    if spec.device_model is not DeviceModel.VIRTIO:
        return []
    return [
        "-device",
        "virtio-balloon-pci,id=balloon0,free-page-reporting=on",
        "-object",
        "rng-random,id=rng0,filename=/dev/urandom",
        "-device",
        "virtio-rng-pci,rng=rng0,id=rng0dev",
    ]


def _identity(ctx: LaunchContext) -> list[str]:
    if not ctx.hostname:
        return []
    return ["-fw_cfg", f"name={HOSTNAME_FW_CFG},string={_opt(ctx.hostname)}"]


def _cidata(spec: InstanceSpec, ctx: LaunchContext) -> list[str]:
    """The NoCloud seed as a read-only CD-ROM.

    virtio: scsi-cd on virtio-scsi (q35's AHCI has no driver in cloud kernels);
    emulated: ide-cd on the i440fx's second channel, which legacy guests all read.
    """
    if ctx.cidata is None:
        return []
    file = {"driver": "file", "filename": str(ctx.cidata), "read-only": True}
    node = {"driver": "raw", "node-name": "cidata", "read-only": True, "file": file}
    args = ["-blockdev", json.dumps(node, separators=(",", ":"))]
    if spec.device_model is DeviceModel.VIRTIO:
        args += ["-device", "virtio-scsi-pci,id=scsi0"]
        return [*args, "-device", "scsi-cd,bus=scsi0.0,drive=cidata,id=cidata-cd"]
    return [*args, "-device", "ide-cd,bus=ide.1,unit=1,drive=cidata,id=cidata-cd"]


def _driver_iso(ctx: LaunchContext) -> list[str]:
    """Windows setup's driver CD-ROM (virtio only): the descriptor the agent opened goes in
    fdset 1, so QEMU (root until it drops) never opens a path a user named. On q35's
    AHCI, which Windows setup reads with its own drivers (it has none for virtio-scsi)."""
    if ctx.driver_iso_fd is None:
        return []
    file = {"driver": "file", "filename": "/dev/fdset/1", "read-only": True}
    node = {"driver": "raw", "node-name": "driveriso", "read-only": True, "file": file}
    return [
        "-add-fd",
        f"fd={ctx.driver_iso_fd},set=1,opaque=driver-iso",
        "-blockdev",
        json.dumps(node, separators=(",", ":")),
        "-device",
        "ide-cd,bus=ide.1,drive=driveriso,id=driveriso-cd",
    ]


def _guest_agent(spec: InstanceSpec, paths: RunPaths) -> list[str]:
    """A virtio-serial port named as qemu-guest-agent expects, on a Unix socket here."""
    if not spec.guest_agent:
        return []
    return [
        "-chardev",
        f"socket,id=qga0,path={_opt(paths.qga)},server=on,wait=off",
        "-device",
        "virtio-serial-pci,id=vser0",
        "-device",
        "virtserialport,bus=vser0.0,chardev=qga0,name=org.qemu.guest_agent.0",
    ]


def _json(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))


def _tpm(ctx: LaunchContext, paths: RunPaths) -> list[str]:
    """A TPM 2.0 CRB device backed by swtpm on its control socket (QEMU never spawns it)."""
    if ctx.tpm_state is None:
        return []
    return [
        "-chardev",
        f"socket,id=chrtpm,path={_opt(paths.swtpm)}",
        "-tpmdev",
        "emulator,id=tpm0,chardev=chrtpm",
        "-device",
        "tpm-crb,tpmdev=tpm0,id=tpm",
    ]


def _opt(value: object) -> str:
    """Escape a value for QEMU's key=value option syntax (a comma is doubled)."""
    return str(value).replace(",", ",,")
