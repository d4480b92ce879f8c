"""The image builders' shared pieces: the runner's error mapping, atomic writes that leave
nothing on failure, the debootstrap cache keyed by mirror and packages (with a fake
debootstrap on PATH), and disk assembly through a non-BIOS (GPT) layout."""

from __future__ import annotations

import json
import os
import shutil
import struct
import tarfile
from pathlib import Path

import psutil
import pytest

from virtfleet.errors import HostError, ProcessError, TimeoutError_
from virtfleet.storage.builders import debian, disk, efi, rootfs, tiny
from virtfleet.storage.builders.debootstrap import MIRROR_ENV, Debootstrap, cached_root
from virtfleet.storage.builders.files import cached_dir, cached_file, write_atomic
from virtfleet.storage.builders.run import require_tools, run
from virtfleet.storage.images import default_builders

# --- runner ------------------------------------------------------------------------------


def test_run_returns_stdout_and_feeds_stdin() -> None:
    assert run(["tr", "a-z", "A-Z"], stdin="hello") == "HELLO"


def test_a_failing_tool_is_process_failed_with_its_stderr_tail() -> None:
    with pytest.raises(ProcessError) as err:
        run(["sh", "-c", "echo first >&2; echo second >&2; echo last >&2; echo 4th >&2; exit 3"])
    assert err.value.code == "process_failed"
    assert err.value.message == "sh failed (exit 3): second | last | 4th"


def test_a_missing_tool_is_host_unsupported_naming_the_fix() -> None:
    with pytest.raises(HostError) as err:
        run(["virtfleet-no-such-tool", "--help"])
    assert err.value.code == "host_unsupported"
    assert "virtfleet-no-such-tool" in err.value.message
    assert "scripts/bootstrap.sh" in err.value.message


def test_require_tools_names_each_missing_tool_and_file_with_its_package(tmp_path: Path) -> None:
    absent = tmp_path / "mbr.bin"
    with pytest.raises(HostError) as err:
        require_tools("building x", ["sh", "syslinux-not-here"], {absent: "syslinux-common"})
    assert err.value.message == (
        f"building x needs syslinux-not-here (not packaged), {absent} (syslinux-common);"
        " run scripts/bootstrap.sh"
    )
    require_tools("building x", ["sh"], {Path("/bin/sh"): "dash"})  # all there: no error


def test_a_timeout_kills_the_tool_and_its_children(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    with pytest.raises(TimeoutError_) as err:
        run(["sh", "-c", f"sleep 300 & echo $! > {pidfile}; wait"], timeout_s=0.5)
    assert err.value.code == "timeout"
    child = int(pidfile.read_text())
    assert not _running(child), "the tool's child outlived the timeout"


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


# --- atomic writes -----------------------------------------------------------------------


def _fail_halfway(tmp: Path) -> None:
    tmp.write_bytes(b"half an image")
    raise ProcessError("qemu-img failed (exit 1): disk full")


def test_a_failed_write_leaves_nothing_and_keeps_the_old_file(tmp_path: Path) -> None:
    dest = tmp_path / "out" / "image.qcow2"
    with pytest.raises(ProcessError):
        write_atomic(dest, _fail_halfway)
    assert list(dest.parent.iterdir()) == []
    dest.write_bytes(b"old")
    with pytest.raises(ProcessError):
        write_atomic(dest, _fail_halfway)
    assert list(dest.parent.iterdir()) == [dest] and dest.read_bytes() == b"old"


def test_write_atomic_sets_the_mode(tmp_path: Path) -> None:
    dest = tmp_path / "image.qcow2"
    write_atomic(dest, lambda tmp: tmp.write_bytes(b"disk"), mode=0o600)
    assert dest.read_bytes() == b"disk" and dest.stat().st_mode & 0o777 == 0o600


def test_a_failed_cached_build_leaves_no_work_dir_and_a_good_one_prunes_stale(
    tmp_path: Path,
) -> None:
    stale = tmp_path / "img-old.qcow2"
    stale.write_bytes(b"old")

    def failing(tmp: Path, work: Path) -> None:
        (work / "disk.raw").write_bytes(b"raw")
        _fail_halfway(tmp)

    with pytest.raises(ProcessError):
        cached_file(tmp_path / "img-new.qcow2", failing, "img-*.qcow2")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["img-old.qcow2"]
    cached_file(tmp_path / "img-new.qcow2", lambda tmp, work: tmp.write_bytes(b"new"), "img-*")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["img-new.qcow2"]


def test_a_failed_cached_dir_leaves_nothing(tmp_path: Path) -> None:
    def failing(staging: Path) -> None:
        (staging / "root").mkdir()
        _fail_halfway(staging / "root" / "file")

    with pytest.raises(ProcessError):
        cached_dir(tmp_path / "tree", "done", failing)
    assert list(tmp_path.iterdir()) == []


# --- debootstrap cache -------------------------------------------------------------------

FAKE_DEBOOTSTRAP = """#!/bin/sh
# A debootstrap stand-in: a merged-/usr tree with a downloaded .deb; logs its arguments.
eval "target=\\${$(($# - 1))}"
echo "$@" >> "$FAKE_DEBOOTSTRAP_LOG"
[ -z "$FAKE_DEBOOTSTRAP_FAIL" ] || { echo "E: Couldn't download packages" >&2; exit 1; }
mkdir -p "$target/usr/sbin" "$target/var/cache/apt/archives" "$target/etc"
ln -s usr/sbin "$target/sbin"
echo deb > "$target/var/cache/apt/archives/libc6.deb"
echo 12.8 > "$target/etc/debian_version"
"""


@pytest.fixture
def fake_debootstrap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The fake on PATH; returns its log (one line of arguments per run)."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "debootstrap").write_text(FAKE_DEBOOTSTRAP)
    (bindir / "debootstrap").chmod(0o755)
    log = tmp_path / "debootstrap.log"
    log.touch()
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_DEBOOTSTRAP_LOG", str(log))
    monkeypatch.delenv(MIRROR_ENV, raising=False)
    return log


def test_the_debootstrap_key_covers_suite_variant_mirror_and_packages() -> None:
    base = Debootstrap("bookworm", "minbase", ("systemd", "udev"), "http://a/debian")
    changed = [
        Debootstrap("trixie", "minbase", ("systemd", "udev"), "http://a/debian"),
        Debootstrap("bookworm", "buildd", ("systemd", "udev"), "http://a/debian"),
        Debootstrap("bookworm", "minbase", ("systemd",), "http://a/debian"),
        Debootstrap("bookworm", "minbase", ("systemd", "udev"), "http://b/debian"),
    ]
    assert len({base.key, *(spec.key for spec in changed)}) == 5
    assert Debootstrap("bookworm", "minbase", ("udev", "systemd"), "http://a/debian").key == (
        base.key
    )


def test_the_mirror_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MIRROR_ENV, "http://mirror.lab/debian")
    assert Debootstrap("bookworm").mirror == "http://mirror.lab/debian"
    monkeypatch.delenv(MIRROR_ENV)
    assert Debootstrap("bookworm").mirror == "http://deb.debian.org/debian"


def test_a_cached_tree_is_reused_and_a_mirror_change_rebuilds(
    fake_debootstrap: Path, tmp_path: Path
) -> None:
    a = Debootstrap("bookworm", packages=("udev",), mirror="http://a/debian")
    root = cached_root(a, tmp_path / "cache")
    assert (root / "etc/debian_version").read_text() == "12.8\n"
    assert cached_root(a, tmp_path / "cache") == root
    b = Debootstrap("bookworm", packages=("udev",), mirror="http://b/debian")
    assert cached_root(b, tmp_path / "cache") != root
    runs = fake_debootstrap.read_text().splitlines()
    assert [line.split()[-1] for line in runs] == ["http://a/debian", "http://b/debian"]


def test_a_failed_debootstrap_caches_nothing(
    fake_debootstrap: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_DEBOOTSTRAP_FAIL", "1")
    with pytest.raises(ProcessError, match="Couldn't download packages"):
        cached_root(Debootstrap("bookworm"), tmp_path / "cache")
    assert list((tmp_path / "cache" / "debootstrap").iterdir()) == []


def test_the_debian_container_rootfs_uses_the_configured_mirror(
    fake_debootstrap: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(MIRROR_ENV, "http://mirror.lab/debian")
    out = tmp_path / "deb12.rootfs.tar"
    rootfs.build_debian_rootfs(out, tmp_path / "cache")
    assert fake_debootstrap.read_text().split()[-1] == "http://mirror.lab/debian"
    with tarfile.open(out) as tar:
        names = tar.getnames()
        init = tar.getmember("usr/sbin/init")  # through the merged-/usr sbin link
        assert init.mode == 0o755 and tar.getmember("sbin").issym()
        assert b"virtfleet container init" in tar.extractfile(init).read()  # type: ignore[union-attr]
    assert not any(name.startswith("var/cache/apt/archives") for name in names)
    assert out.stat().st_mode & 0o777 == 0o600


def test_the_debian_image_key_follows_the_mirror_and_the_layout() -> None:
    a = Debootstrap(debian.SUITE, packages=debian.PACKAGES, mirror="http://a/debian")
    b = Debootstrap(debian.SUITE, packages=debian.PACKAGES, mirror="http://b/debian")
    assert debian.recipe_digest(a, disk.BIOS) != debian.recipe_digest(b, disk.BIOS)
    assert debian.recipe_digest(a, disk.BIOS) != debian.recipe_digest(a, GptLayout())
    assert tiny.content_digest(disk.BIOS) != tiny.content_digest(GptLayout())


def _debootstrapped(root: Path) -> Path:
    """The few files of a debootstrap tree that ``debian.configure`` changes."""
    for d in ("etc/cloud/cloud.cfg.d", "etc/ssh", "etc/network",
              "etc/systemd/system/multi-user.target.wants",
              "etc/systemd/system/timers.target.wants"):  # fmt: skip
        (root / d).mkdir(parents=True)
    (root / "etc/ssh/ssh_host_rsa_key.pub").write_text("ssh-rsa AAAA debootstrap\n")
    wants = root / "etc/systemd/system"
    for link in ("multi-user.target.wants/e2scrub_reap.service",
                 "multi-user.target.wants/ssh.service", "timers.target.wants/e2scrub_all.timer",
                 "timers.target.wants/apt-daily.timer"):  # fmt: skip
        (wants / link).symlink_to(f"/lib/systemd/system/{Path(link).name}")
    return root


def test_the_debian_image_boots_three_cloud_init_stages_and_makes_one_host_key(
    tmp_path: Path,
) -> None:
    """What first boot costs under TCG: the config stage's modules run in the final stage
    (runcmd before scripts-user) with cloud-config.service masked; one ed25519 host key;
    no locale (no locales package: it failed every boot) or grub-dpkg (no GRUB)."""
    root = _debootstrapped(tmp_path / "root")
    debian.configure(root)
    text = (root / "etc/cloud/cloud.cfg.d/90-virtfleet.cfg").read_text()
    cfg = json.loads(text.split("\n", 1)[1])  # a comment line, then JSON (which is YAML)
    assert cfg["ssh_genkeytypes"] == ["ed25519"] and cfg["cloud_config_modules"] == []
    final, init = cfg["cloud_final_modules"], cfg["cloud_init_modules"]
    assert final.index("apt-configure") < final.index("package-update-upgrade-install")
    assert final.index("runcmd") < final.index("scripts-user") < final.index("final-message")
    assert {"write-files", "set_hostname", "users-groups", "ssh", "growpart"} <= set(init)
    assert not {"locale", "grub-dpkg", "snap", "byobu"} & set(init + final)
    units = root / "etc/systemd/system"
    assert os.readlink(units / "cloud-config.service") == "/dev/null"
    assert sorted(p.name for p in units.glob("*.wants/*")) == ["apt-daily.timer", "ssh.service"]
    assert not list((root / "etc/ssh").glob("ssh_host_*"))


# --- disk assembly -----------------------------------------------------------------------


class GptLayout:
    """An EFI-shaped layout (GPT, EFI system partition) without a loader, for the test."""

    name = "test-gpt"
    tools: tuple[str, ...] = ()
    files: dict[Path, str] = {}
    fat_bits = 32

    def table(self, boot_sectors: int) -> str:
        return f"label: gpt\nstart={disk.BOOT_START_SECTOR}, size={boot_sectors}, type=U\ntype=L\n"

    def install(self, raw: Path, boot: disk.Partition, entry: disk.BootEntry, cache: Path) -> None:
        disk.copy_to_fat(raw, boot, {"vmlinuz": entry.kernel, "initrd.img": entry.initrd})


def test_a_gpt_layout_gets_its_partitions_filled_and_the_backup_header_kept(
    tmp_path: Path,
) -> None:
    if shutil.which("mdir") is None or shutil.which("mke2fs") is None:
        pytest.skip("mtools and e2fsprogs are not installed (scripts/bootstrap.sh)")
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/hostname").write_text("t\n")
    (tmp_path / "vmlinuz").write_bytes(b"kernel")
    (tmp_path / "initrd").write_bytes(b"initrd")
    spec = disk.DiskSpec(size_mib=64, boot_mib=34, boot_label="ESP", root_label="testroot")
    entry = disk.BootEntry("t", tmp_path / "vmlinuz", tmp_path / "initrd", "quiet")
    raw = tmp_path / "disk.raw"
    disk.assemble(raw, spec, GptLayout(), entry, root, tmp_path)

    assert raw.stat().st_size == 64 * disk.MIB
    run(["sfdisk", "--verify", raw])  # primary and backup GPT intact
    boot, part = disk.partitions(raw)
    assert boot.offset == disk.BOOT_START_SECTOR * disk.SECTOR and boot.size == 34 * disk.MIB
    listing = run(["mdir", "-b", "-i", f"{raw}@@{boot.offset}", "::/"])
    assert sorted(listing.split()) == ["::/initrd.img", "::/vmlinuz"]
    with raw.open("rb") as f:
        f.seek(boot.offset)
        fat = f.read(512)
        f.seek(part.offset + 1024)
        ext4 = f.read(1024)
    assert fat[82:90] == b"FAT32   " and fat[71:82] == b"ESP        "
    blocks, log_size = struct.unpack_from("<I", ext4, 4)[0], struct.unpack_from("<I", ext4, 24)[0]
    assert struct.unpack_from("<H", ext4, 56)[0] == 0xEF53
    assert ext4[120:136].rstrip(b"\0") == b"testroot"
    assert blocks * (1024 << log_size) <= part.size, "the root filesystem overruns its partition"


def _fake_deb(debs: Path, package: str, files: dict[str, bytes]) -> None:
    """A minimal .deb of ``package`` holding ``files``, where the recipe's cache keeps them."""
    tree = debs.parent / f"{package}-tree"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "DEBIAN/control").write_text(
        f"Package: {package}\nVersion: 1\nArchitecture: amd64\nMaintainer: t <t@t>\n"
        "Description: test\n"
    )
    for name, data in files.items():
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        (tree / name).write_bytes(data)
    debs.mkdir(exist_ok=True)
    run(["dpkg-deb", "--root-owner-group", "-b", tree, debs / f"{package}_1_amd64.deb"])


def test_the_efi_layout_puts_shim_grub_and_the_kernel_on_an_esp(tmp_path: Path) -> None:
    """GPT with an EFI system partition: shim at the removable path, GRUB beside it (where
    shim looks), GRUB's configuration at its built-in prefix booting the entry."""
    if shutil.which("mdir") is None or shutil.which("dpkg-deb") is None:
        pytest.skip("mtools and dpkg are not installed (scripts/bootstrap.sh)")
    _fake_deb(tmp_path / "debs", "shim-signed", {efi.SHIM: b"shim"})
    _fake_deb(tmp_path / "debs", "grub-efi-amd64-signed", {efi.GRUB: b"grub"})
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (tmp_path / "vmlinuz").write_bytes(b"kernel")
    (tmp_path / "initrd").write_bytes(b"initrd")
    spec = disk.DiskSpec(size_mib=64, boot_mib=32, boot_label="ESP", root_label="testroot")
    entry = disk.BootEntry("t", tmp_path / "vmlinuz", tmp_path / "initrd", "console=ttyS0")
    (tmp_path / "work").mkdir()
    raw = tmp_path / "work" / "disk.raw"
    disk.assemble(raw, spec, efi.EFI, entry, root, tmp_path)

    run(["sfdisk", "--verify", raw])
    table = json.loads(run(["sfdisk", "--json", raw]))["partitiontable"]
    assert table["label"] == "gpt" and table["partitions"][0]["type"] == efi.ESP_TYPE
    boot = disk.partitions(raw)[0]
    image = f"{raw}@@{boot.offset}"

    def read(name: str) -> bytes:
        return run(["mtype", "-i", image, f"::/{name}"]).encode()

    assert (read("EFI/BOOT/BOOTX64.EFI"), read("EFI/BOOT/grubx64.efi")) == (b"shim", b"grub")
    config = read("EFI/debian/grub.cfg").decode()
    assert "linux /vmlinuz console=ttyS0" in config and "initrd /initrd.img" in config
    assert (read("vmlinuz"), read("initrd.img")) == (b"kernel", b"initrd")


def test_every_default_builder_loads_its_recipe() -> None:
    loaded = {name: load() for name, load in default_builders().items()}
    assert loaded == {
        "tiny": tiny.build_tiny,
        "tiny-efi": tiny.build_tiny_efi,
        "debian-12": debian.build_debian12,
        "container-tiny": rootfs.build_tiny_rootfs,
        "container-debian-12": rootfs.build_debian_rootfs,
    }
