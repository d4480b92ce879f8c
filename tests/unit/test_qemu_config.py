"""Golden tests for the QEMU config builder: the argv is data, compared line by line."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from virtfleet.drivers.base import LaunchContext, UefiFiles
from virtfleet.drivers.qemu.config import QemuOptions, RunPaths, build_argv
from virtfleet.model.defaults import complete
from virtfleet.model.instance import (
    Accel,
    DeviceModel,
    Firmware,
    GuestOs,
    InstanceSpec,
    NicSpec,
)

GOLDEN = Path(__file__).parent / "golden"
CASES = {
    "virtio-tcg": (DeviceModel.VIRTIO, Accel.TCG),
    "virtio-kvm": (DeviceModel.VIRTIO, Accel.KVM),
    "emulated-tcg": (DeviceModel.EMULATED, Accel.TCG),
    "emulated-kvm": (DeviceModel.EMULATED, Accel.KVM),
}
# Every firmware x device model x accelerator QEMU can run (uefi-secure needs q35).
FIRMWARE_CASES = {
    f"{model.value}-{accel.value}-{fw.value}": (model, accel, fw)
    for model in DeviceModel
    for accel in (Accel.TCG, Accel.KVM)
    for fw in (Firmware.UEFI, Firmware.UEFI_SECURE)
    if not (fw is Firmware.UEFI_SECURE and model is DeviceModel.EMULATED)
}
STATE = Path("/data/disks/web-1/tpm")
OVMF = Path("/usr/share/OVMF")


def _uefi(firmware: Firmware) -> UefiFiles | None:
    if firmware is Firmware.BIOS:
        return None
    secure = firmware is Firmware.UEFI_SECURE
    code = OVMF / ("OVMF_CODE_4M.secboot.fd" if secure else "OVMF_CODE_4M.fd")
    return UefiFiles(code, Path(f"/data/disks/web-1/{firmware.value}.vars.fd"), secure)


def _argv(
    model: DeviceModel,
    accel: Accel,
    max_vcpus: int | None = 4,
    firmware: Firmware = Firmware.BIOS,
    tpm: bool = False,
) -> list[str]:
    spec = InstanceSpec(
        name="web-1",
        image="tiny",
        vcpus=2,
        max_vcpus=max_vcpus,
        memory_mib=512,
        device_model=model,
        firmware=firmware,
        tpm=tpm,
        nics=[NicSpec(mac="52:54:00:12:34:56")],
    ).normalized()
    ctx = LaunchContext(
        accel=accel,
        accel_reason="test",
        disks={"root": Path("/data/disks/web-1/root.qcow2")},
        hostname="web-1",
        uefi=_uefi(firmware),
        tpm_state=STATE if tpm else None,
    )
    opts = QemuOptions(runas="virtfleet-qemu")
    return build_argv(spec, ctx, RunPaths(Path("/data/run/web-1")), opts)


@pytest.mark.parametrize("case", sorted(CASES))
def test_argv_matches_golden(case: str) -> None:
    """The argv for each device model x accelerator equals its reviewed golden file."""
    text = "\n".join(_argv(*CASES[case])) + "\n"
    golden = GOLDEN / f"qemu-{case}.txt"
    if os.environ.get("VIRTFLEET_UPDATE_GOLDEN"):
        golden.write_text(text)
    assert text == golden.read_text()


@pytest.mark.parametrize("case", sorted(FIRMWARE_CASES))
def test_firmware_argv_matches_golden(case: str) -> None:
    """UEFI VMs get OVMF as two flash chips (code read-only, the VM's own variable store);
    Secure Boot adds SMM and secure-only flash writes: one reviewed golden per combination."""
    model, accel, firmware = FIRMWARE_CASES[case]
    text = "\n".join(_argv(model, accel, 4, firmware)) + "\n"
    golden = GOLDEN / f"qemu-{case}.txt"
    if os.environ.get("VIRTFLEET_UPDATE_GOLDEN"):
        golden.write_text(text)
    assert text == golden.read_text()


def test_tpm_argv_matches_golden() -> None:
    """Secure Boot with a TPM (what Windows 11 needs): swtpm's socket as a CRB TPM 2.0."""
    text = "\n".join(_argv(DeviceModel.VIRTIO, Accel.TCG, 4, Firmware.UEFI_SECURE, True))
    golden = GOLDEN / "qemu-virtio-tcg-uefi-secure-tpm.txt"
    if os.environ.get("VIRTFLEET_UPDATE_GOLDEN"):
        golden.write_text(text + "\n")
    assert text + "\n" == golden.read_text()
    assert "tpm" not in " ".join(_argv(DeviceModel.VIRTIO, Accel.TCG, 4, Firmware.UEFI_SECURE))


@pytest.mark.parametrize("accel", [Accel.KVM, Accel.TCG])
def test_windows_defaults_match_golden(accel: Accel) -> None:
    """--os windows: a new VM gets UEFI Secure Boot and a TPM (model.defaults), a local-time
    RTC, and Hyper-V enlightenments only where KVM runs it (TCG has no Hyper-V emulation)."""
    uuid = "0b9c7a7e-6a3e-4a55-9d5c-1f2e3d4c5b6a"
    nics = [NicSpec(mac="52:54:00:12:34:57")]
    spec = complete(
        InstanceSpec(name="win-1", image="win", os=GuestOs.WINDOWS, uuid=uuid, nics=nics)
    ).normalized()
    assert (spec.firmware, spec.tpm) == (Firmware.UEFI_SECURE, True)
    ctx = LaunchContext(
        accel=accel,
        accel_reason="test",
        disks={"root": Path("/data/disks/win-1/root.qcow2")},
        hostname="win-1",
        uefi=UefiFiles(OVMF / "OVMF_CODE_4M.secboot.fd", Path("/d/win-1/v.fd"), True),
        tpm_state=Path("/data/disks/win-1/tpm"),
    )
    argv = build_argv(spec, ctx, RunPaths(Path("/data/run/win-1")), QemuOptions(), uid=None)
    text = "\n".join(argv) + "\n"
    golden = GOLDEN / f"qemu-windows-{accel.value}.txt"
    if os.environ.get("VIRTFLEET_UPDATE_GOLDEN"):
        golden.write_text(text)
    assert text == golden.read_text()
    cpu = argv[argv.index("-cpu") + 1]
    assert ("hv_relaxed" in cpu) is (accel is Accel.KVM)
    assert argv[argv.index("-rtc") + 1] == "base=localtime"
    assert "-rtc" not in _argv(DeviceModel.VIRTIO, accel)


def test_windows_driver_iso_matches_golden() -> None:
    """--driver-iso: the descriptor the agent opened goes to QEMU in an fdset (the path is
    never on the command line) and becomes a read-only CD-ROM on q35's AHCI."""
    uuid = "0b9c7a7e-6a3e-4a55-9d5c-1f2e3d4c5b6a"
    spec = complete(
        InstanceSpec(
            name="win-1", image="win", os=GuestOs.WINDOWS, uuid=uuid,
            nics=[NicSpec(mac="52:54:00:12:34:57")], driver_iso="/srv/iso/virtio-win.iso",
        )
    ).normalized()  # fmt: skip
    ctx = LaunchContext(
        accel=Accel.TCG,
        accel_reason="test",
        disks={"root": Path("/data/disks/win-1/root.qcow2")},
        uefi=UefiFiles(OVMF / "OVMF_CODE_4M.secboot.fd", Path("/d/win-1/v.fd"), True),
        tpm_state=Path("/data/disks/win-1/tpm"),
        driver_iso_fd=9,
    )
    argv = build_argv(spec, ctx, RunPaths(Path("/data/run/win-1")), QemuOptions(), uid=None)
    text = "\n".join(argv) + "\n"
    golden = GOLDEN / "qemu-windows-tcg-driver-iso.txt"
    if os.environ.get("VIRTFLEET_UPDATE_GOLDEN"):
        golden.write_text(text)
    assert text == golden.read_text()
    assert "virtio-win" not in text
    assert argv[argv.index("-add-fd") + 1] == "fd=9,set=1,opaque=driver-iso"


@pytest.mark.parametrize(
    ("fields", "fix"),
    [
        ({}, "os windows"),
        ({"os": GuestOs.WINDOWS, "device_model": DeviceModel.EMULATED}, "device_model virtio"),
    ],
)
def test_a_driver_iso_is_for_windows_on_virtio(fields: dict[str, object], fix: str) -> None:
    with pytest.raises(ValueError, match=fix):
        InstanceSpec.model_validate({"name": "w", "driver_iso": "/srv/d.iso", **fields})


def test_secure_boot_flash_is_smm_only_and_plain_uefi_is_not() -> None:
    """Only uefi-secure turns on SMM and secure flash; the code flash is never writable."""
    secure = _argv(DeviceModel.VIRTIO, Accel.TCG, 4, Firmware.UEFI_SECURE)
    plain = _argv(DeviceModel.VIRTIO, Accel.TCG, 4, Firmware.UEFI)
    assert secure[secure.index("-machine") + 1] == "q35,pflash0=fw-code,pflash1=fw-vars,smm=on"
    assert "driver=cfi.pflash01,property=secure,value=on" in secure
    assert plain[plain.index("-machine") + 1] == "q35,pflash0=fw-code,pflash1=fw-vars"
    assert "driver=cfi.pflash01,property=secure,value=on" not in plain
    code = next(a for a in plain if '"node-name":"fw-code"' in a)
    assert '"read-only":true' in code and "OVMF_CODE_4M.fd" in code
    assert "pflash" not in " ".join(_argv(DeviceModel.VIRTIO, Accel.TCG))


def test_emulated_uses_legacy_devices_only() -> None:
    """Legacy guests get i440fx, IDE and e1000, and no virtio device at all."""
    argv = " ".join(_argv(DeviceModel.EMULATED, Accel.TCG))
    assert "-machine pc " in argv and "ide-hd" in argv and "e1000" in argv
    assert "virtio" not in argv


def test_tcg_bounds_translation_cache_and_kvm_uses_host_cpu() -> None:
    """TCG bounds its translation cache (unless vCPUs can be hot-plugged: a hot-added vCPU
    needs a free code region); KVM passes the host CPU through."""
    assert "tcg,tb-size=32" in _argv(DeviceModel.VIRTIO, Accel.TCG, max_vcpus=None)
    assert "tcg" in _argv(DeviceModel.VIRTIO, Accel.TCG, max_vcpus=4)
    kvm = _argv(DeviceModel.VIRTIO, Accel.KVM)
    assert kvm[kvm.index("-accel") + 1] == "kvm" and kvm[kvm.index("-cpu") + 1] == "host"


def test_user_nic_is_restricted_by_default() -> None:
    """User-mode networking cannot reach the host unless asked otherwise."""
    assert "user,id=net0,restrict=on" in _argv(DeviceModel.VIRTIO, Accel.TCG)


def test_commas_in_paths_are_escaped() -> None:
    """A comma in a path cannot inject QEMU options."""
    spec = InstanceSpec(name="a", image="tiny").normalized()
    ctx = LaunchContext(Accel.TCG, "", {"root": Path("/d/root.qcow2")}, hostname="a")
    argv = build_argv(spec, ctx, RunPaths(Path("/x,server=off")), QemuOptions())
    qmp = argv[argv.index("-mon") - 1]
    assert "path=/x,,server=off/qmp.sock," in qmp


def test_own_uid_drops_to_it_and_chroots_into_the_jail() -> None:
    """With a pool uid QEMU drops to uid:gid (no shared user) and chroots into the VM's
    empty jail directory; without one it keeps the shared user."""
    spec = InstanceSpec(name="web-1", image="tiny").normalized()
    ctx = LaunchContext(accel=Accel.TCG, accel_reason="test", disks={"root": Path("/d/r.qcow2")})
    paths = RunPaths(Path("/data/run/web-1"))
    argv = build_argv(spec, ctx, paths, QemuOptions(runas="virtfleet-qemu"), uid=90_007)
    assert argv[argv.index("-run-with") + 1] == "user=90007:90007,chroot=/data/run/web-1/jail"
    assert argv.count("-run-with") == 1
    shared = build_argv(spec, ctx, paths, QemuOptions(runas="virtfleet-qemu"))
    assert shared[shared.index("-run-with") + 1] == "user=virtfleet-qemu"


def test_disk_chain_is_opened_explicitly_with_the_page_cache_kept() -> None:
    """Every file of a disk's chain is a node of its own that keeps the host page cache
    (QEMU drops it in a memory snapshot's pause otherwise) and takes the host's AIO engine;
    backing files are read-only, and a raw base takes no ``backing`` option."""
    spec = InstanceSpec(name="web-1", image="tiny").normalized()
    ctx = LaunchContext(Accel.TCG, "test", {"root": Path("/d/root.qcow2")})
    chain = [(Path("/i/mid.qcow2"), "qcow2"), (Path("/i/base.raw"), "raw")]
    argv = build_argv(
        spec, ctx, RunPaths(Path("/r")), QemuOptions(aio="io_uring"), chains={"root": chain}
    )
    top = json.loads(argv[argv.index("-blockdev") + 1])
    mid, base = top["backing"], top["backing"]["backing"]
    assert [n["file"]["filename"] for n in (top, mid, base)] == [
        "/d/root.qcow2",
        "/i/mid.qcow2",
        "/i/base.raw",
    ]
    for node in (top, mid, base):
        assert node["file"]["drop-cache"] is False and node["file"]["aio"] == "io_uring"
    assert mid["read-only"] is True and base["read-only"] is True and "read-only" not in top
    assert (mid["driver"], base["driver"]) == ("qcow2", "raw") and "backing" not in base
    plain = build_argv(spec, ctx, RunPaths(Path("/r")), QemuOptions())
    alone = json.loads(plain[plain.index("-blockdev") + 1])
    assert "backing" not in alone and alone["file"]["aio"] == "threads"
