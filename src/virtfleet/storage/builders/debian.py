"""Recipe ``debian-12``: a general-purpose guest, Debian bookworm by debootstrap with
systemd, cloud-init (NoCloud only), qemu-guest-agent, openssh-server and the cloud kernel.

The shared cached debootstrap (``debootstrap``) gives the root tree; a working
copy of it is configured for cloning (no machine-id, no SSH host keys, no apt
lists) and put on a bootable disk (``disk``; BIOS by default), the kernel and
initramfs Debian installed booted from the boot partition. The finished qcow2
is cached under ``<cache_dir>/debian-12``, keyed by the recipe, the debootstrap
(so the mirror, ``VIRTFLEET_DEBIAN_MIRROR``) and the layout: a warm build only
copies it. Needs root and the network path to the Debian mirror.

Boot time (measured under TCG, where every Python start and key generation is
slow): cloud-init runs three stages, not four — the config stage's modules run
in the final stage and ``cloud-config.service`` is masked, which saves one
start of cloud-init's Python; first boot makes only an ed25519 SSH host key
(user-data ``ssh_genkeytypes`` asks for more); the modules for tools the image
lacks or platforms it is not (locale without ``locales``, grub-dpkg without
GRUB, snap, byobu, ubuntu/landscape/lxd/fan, IBM RMC, rightscale, EC2) are off;
``e2scrub`` (LVM snapshots; the image has no LVM) is disabled, not masked.
Everything the platform's seed writes (hostname, users, SSH keys, write_files,
runcmd, packages) and the usual user-data (bootcmd, mounts, growpart/resizefs,
set-passwords, apt, ntp, timezone, ca-certs, phone-home, power-state) still runs.

Where first boot goes (systemd-analyze, 2 vCPUs, TCG on the loaded 2-core machine):
kernel ~16-30 s, userspace the rest, on one chain: cloud-init-local, networking's
DHCP, cloud-init, logind, cloud-final. Each cloud-init stage is a Python that first
imports ``cloudinit.cmd.main`` (~20 s of TCG: jsonschema, jinja2, requests), while
udev's coldplug competes for the vCPUs. Not worth it (A/B, same load, side by side):
an initramfs of the needed drivers only (``MODULES=list``, 7 MB instead of 15 MB;
the seed CD-ROM's sr_mod must stay in it or cloud-init's generator turns cloud-init
off) and masking binfmt/DRM/device-mapper units: same boot time within 5 s of 375 s.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from virtfleet.errors import ImageError
from virtfleet.storage.builders import Progress, disk, no_progress
from virtfleet.storage.builders.debootstrap import Debootstrap, cached_root, working_copy
from virtfleet.storage.builders.files import cached_file, copy_atomic
from virtfleet.storage.builders.run import require_tools

__all__ = ["build_debian12", "cached_debian12", "configure"]

SUITE = "bookworm"
#: python3-cffi-backend provides the virtual packages python3-cryptography needs;
#: debootstrap's resolver does not pick providers of virtual packages itself.
PACKAGES = (
    "systemd", "systemd-sysv", "udev", "dbus", "linux-image-cloud-amd64", "initramfs-tools",
    "cloud-init", "python3-cffi-backend", "qemu-guest-agent", "openssh-server",
    "ifupdown", "isc-dhcp-client", "netbase", "iproute2", "sudo",
)  # fmt: skip
ROOT_LABEL = "debianroot"
# no_timer_check, as tiny's: TCG on a loaded host can fail the kernel's IO-APIC timer check.
CMDLINE = f"console=ttyS0 root=LABEL={ROOT_LABEL} rw quiet no_timer_check"
DISK = disk.DiskSpec(size_mib=2048, boot_mib=96, boot_label="DEBBOOT", root_label=ROOT_LABEL)
RECIPE_VERSION = "3"  # bump when the configuration below changes
#: /etc/cloud/cloud.cfg.d/90-virtfleet.cfg (its module lists replace Debian's cloud.cfg ones).
CLOUD_SETTINGS: dict[str, list[str]] = {
    "datasource_list": ["NoCloud", "None"],  # only the seed CD-ROM; no metadata probing
    # RSA/DSA/ECDSA generation costs ~35 s of first boot under TCG; user-data may ask for more.
    "ssh_genkeytypes": ["ed25519"],
    "cloud_init_modules": [
        "migrator", "seed_random", "bootcmd", "write-files", "growpart", "resizefs",
        "disk_setup", "mounts", "set_hostname", "update_hostname", "update_etc_hosts",
        "ca-certs", "rsyslog", "users-groups", "ssh",
    ],
    # Empty, its unit masked: Debian's config-stage modules run first in the final stage.
    "cloud_config_modules": [],
    "cloud_final_modules": [
        "set-passwords", "apt-pipelining", "apt-configure", "ntp", "timezone", "runcmd",
        "package-update-upgrade-install", "write-files-deferred", "puppet", "chef",
        "mcollective", "salt-minion", "scripts-vendor", "scripts-per-once", "scripts-per-boot",
        "scripts-per-instance", "scripts-user", "ssh-authkey-fingerprints", "keys-to-console",
        "install-hotplug", "phone-home", "final-message", "power-state-change",
    ],
}  # fmt: skip
# JSON is YAML: cloud-init reads it as written.
CLOUD_CFG = "# virtfleet: see storage/builders/debian.py\n" + json.dumps(CLOUD_SETTINGS, indent=1)
#: Units that only cost boot time here: masked (the stage is empty), or disabled (no LVM).
MASKED_UNITS = ("cloud-config.service",)
DISABLED_UNITS = ("multi-user.target.wants/e2scrub_reap.service",
                  "timers.target.wants/e2scrub_all.timer")  # fmt: skip
FSTAB = f"LABEL={ROOT_LABEL} / ext4 defaults,noatime 0 1\n"


def build_debian12(
    out: Path, cache_dir: Path, progress: Progress | None = None, layout: disk.Layout = disk.BIOS
) -> None:
    """Write the ``debian-12`` qcow2 to ``out``, building it into ``cache_dir`` if needed."""
    report = progress or no_progress
    cached = cached_debian12(cache_dir, report, layout)
    report(95, "copying image")
    copy_atomic(cached, out)
    report(100, "debian-12 image ready")


def cached_debian12(
    cache_dir: Path, progress: Progress | None = None, layout: disk.Layout = disk.BIOS
) -> Path:
    """The cached ``debian-12`` qcow2 in ``cache_dir``, built first if absent."""
    report = progress or no_progress
    spec = Debootstrap(SUITE, packages=PACKAGES)
    cached = cache_dir / "debian-12" / f"debian-12-{recipe_digest(spec, layout)}.qcow2"
    if not cached.is_file():
        require_tools("building debian-12", ("cp", *disk.DISK_TOOLS, *layout.tools), layout.files)

        def build(tmp: Path, work: Path) -> None:
            _build(tmp, spec, cache_dir, work, layout, report)

        cached_file(cached, build, "debian-12-*.qcow2")
    return cached


def recipe_digest(spec: Debootstrap, layout: disk.Layout) -> str:
    """What decides the image: this recipe, its debootstrap (suite, mirror, packages), layout."""
    recipe = (RECIPE_VERSION, spec.key, layout.name, CMDLINE, CLOUD_CFG, repr(DISK),
              *MASKED_UNITS, *DISABLED_UNITS)  # fmt: skip
    return hashlib.sha256("\0".join(recipe).encode()).hexdigest()[:12]


def _build(
    dest: Path, spec: Debootstrap, cache_dir: Path, work: Path, layout: disk.Layout,
    report: Progress,
) -> None:  # fmt: skip
    report(5, f"debootstrap from {spec.mirror} (a minute or two; cached)")
    root = working_copy(cached_root(spec, cache_dir), work / "root")
    report(60, "configuring the root filesystem")
    configure(root)
    entry = disk.BootEntry("debian", *_boot_files(root), CMDLINE)
    report(70, "assembling disk")
    raw = work / "disk.raw"
    disk.assemble(raw, DISK, layout, entry, root, cache_dir / "debian-12")
    report(85, "converting to qcow2")
    disk.convert_to_qcow2(raw, dest)


def configure(root: Path) -> None:
    """Make the working copy ``root`` a clonable, quick-booting VM image."""
    (root / "etc/fstab").write_text(FSTAB)
    (root / "etc/hostname").write_text("debian\n")
    (root / "etc/cloud/cloud.cfg.d/90-virtfleet.cfg").write_text(CLOUD_CFG)
    (root / "etc/network/interfaces").write_text(
        "source /etc/network/interfaces.d/*\nauto lo\niface lo inet loopback\n"
    )
    # Every clone gets its own machine-id and SSH host keys at first boot.
    (root / "etc/machine-id").write_text("")
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
        shutil.rmtree(root / cache, ignore_errors=True)
        (root / cache / "partial").mkdir(parents=True)
    units = root / "etc/systemd/system"
    for unit in MASKED_UNITS:
        (units / unit).unlink(missing_ok=True)
        (units / unit).symlink_to("/dev/null")
    for wanted in DISABLED_UNITS:
        (units / wanted).unlink(missing_ok=True)


def _boot_files(root: Path) -> tuple[Path, Path]:
    kernels = sorted((root / "boot").glob("vmlinuz-*"))
    if not kernels:
        raise ImageError("debootstrap installed no kernel")
    version = kernels[-1].name.removeprefix("vmlinuz-")
    initrd = root / "boot" / f"initrd.img-{version}"
    if not initrd.is_file():
        raise ImageError(f"no initramfs for kernel {version}")
    return kernels[-1], initrd
