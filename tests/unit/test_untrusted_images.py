"""Untrusted images and host paths below the API: the header checks that refuse images
naming other files, the qemu-img jail (a root-only file stays unreadable even when the
checks are bypassed), exclusive publishing of exports, sparse copies and the clean-up of
what a killed import left."""

from __future__ import annotations

import os
import shutil
import signal
import struct
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from virtfleet.errors import AlreadyExistsError, ImageError, UnsafeImageError
from virtfleet.storage import imagemeta, imports, qemuimg
from virtfleet.storage.hostpaths import HostPaths, copy_sparse
from virtfleet.storage.qemuimg import Jail, fd_path

SECRET = b"ROOT-ONLY-SECRET-" * 4


def _qemu_img(*args: str | Path) -> None:
    subprocess.run(["qemu-img", *map(str, args)], check=True, capture_output=True)


def _jail_user() -> str:
    if os.geteuid() != 0:
        pytest.skip("the jail drops privileges: needs root")
    for user in ("virtfleet-img", "virtfleet-qemu"):
        try:
            subprocess.run(["id", user], check=True, capture_output=True)
            return user
        except subprocess.CalledProcessError:
            continue
    pytest.skip("no unprivileged user (scripts/bootstrap.sh creates virtfleet-img)")


@pytest.fixture
def fd_of() -> Iterator[object]:
    opened: list[int] = []

    def open_(path: Path) -> int:
        opened.append(os.open(path, os.O_RDONLY))
        return opened[-1]

    yield open_
    for fd in opened:
        os.close(fd)


def _check(fd_of: object, path: Path, fmt: str | None = None) -> None:
    imagemeta.check_header(fd_of(path), path.name, fmt)  # type: ignore[operator]


def test_self_contained_images_pass(tmp_path: Path, fd_of: object) -> None:
    """qcow2, monolithicSparse and streamOptimized VMDK, and raw bytes that merely look
    like a qcow2 header (format given as raw) are accepted."""
    raw = tmp_path / "disk.raw"
    raw.write_bytes(os.urandom(1 << 20))
    for fmt, opts in (("qcow2", ""), ("vmdk", ""), ("vmdk", "subformat=streamOptimized")):
        out = tmp_path / f"disk-{fmt}-{len(opts)}"
        _qemu_img("convert", "-f", "raw", "-O", fmt, *(["-o", opts] if opts else []), raw, out)
        _check(fd_of, out)
    fake = tmp_path / "looks-like.raw"
    fake.write_bytes(imagemeta.QCOW2_MAGIC + struct.pack(">IQI", 3, 512, 10) + bytes(1000))
    _check(fd_of, fake, "raw")
    with pytest.raises(UnsafeImageError):
        _check(fd_of, fake)


def test_qcow2_with_data_file_or_backing_is_refused(tmp_path: Path, fd_of: object) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(SECRET)
    data_file = tmp_path / "data-file.qcow2"
    _qemu_img("create", "-q", "-f", "qcow2", "-o", f"data_file={secret}", data_file, "1M")
    backing = tmp_path / "backing.qcow2"
    _qemu_img("create", "-q", "-f", "qcow2", "-u", "-b", secret, "-F", "raw", backing, "1M")
    for path, why in ((data_file, "external data file"), (backing, "backing file")):
        with pytest.raises(UnsafeImageError, match=why) as err:
            _check(fd_of, path)
        assert err.value.code == "unsafe_image" and "\n" not in err.value.message


def test_qcow2_data_file_extension_alone_is_refused(tmp_path: Path, fd_of: object) -> None:
    """The header extension naming a data file is refused even without the feature bit."""
    secret = tmp_path / "secret"
    data_file = tmp_path / "data-file.qcow2"
    _qemu_img("create", "-q", "-f", "qcow2", "-o", f"data_file={secret}", data_file, "1M")
    with data_file.open("r+b") as f:  # clear the incompatible "external data file" bit
        f.seek(72)
        bits = struct.unpack(">Q", f.read(8))[0]
        f.seek(72)
        f.write(struct.pack(">Q", bits & ~imagemeta.QCOW2_INCOMPAT_DATA_FILE))
    with pytest.raises(UnsafeImageError, match="external data file"):
        _check(fd_of, data_file)


def test_vmdk_naming_other_files_is_refused(tmp_path: Path, fd_of: object) -> None:
    """A descriptor with a host extent, a sparse header with capacity 0 (qemu then reads
    its descriptor's extents by name) and a parent hint are refused."""
    desc = tmp_path / "desc.vmdk"
    desc.write_text(
        '# Disk DescriptorFile\ncreateType="monolithicFlat"\nRW 8 FLAT "/etc/shadow" 0\n'
    )
    raw = tmp_path / "disk.raw"
    raw.write_bytes(os.urandom(1 << 20))
    sparse = tmp_path / "sparse.vmdk"
    _qemu_img("convert", "-f", "raw", "-O", "vmdk", raw, sparse)
    no_capacity = tmp_path / "no-capacity.vmdk"
    no_capacity.write_bytes(sparse.read_bytes())
    with no_capacity.open("r+b") as f:
        f.seek(12)
        f.write(struct.pack("<Q", 0))
    child = tmp_path / "child.vmdk"
    _qemu_img("create", "-q", "-f", "vmdk", "-b", sparse, "-F", "vmdk", child)
    for path in (desc, no_capacity, child):
        with pytest.raises(UnsafeImageError):
            _check(fd_of, path)


def test_qemu_img_info_showing_another_file_is_refused() -> None:
    """The second line of defence: what qemu-img itself reports."""
    me = "/dev/fd/5"
    cases = [
        {"backing-filename": "json:{}"},
        {"format-specific": {"type": "qcow2", "data": {"data-file": "/etc/shadow"}}},
        {"format-specific": {"type": "vmdk", "data": {"create-type": "monolithicFlat"}}},
        {"format-specific": {"type": "vmdk", "data": {
            "create-type": "monolithicSparse", "extents": [{"filename": "/dev/sda"}]}}},
        {"children": [{"name": "extents.0", "info": {"filename": "/etc/shadow"}}]},
    ]  # fmt: skip
    for info in cases:
        with pytest.raises(UnsafeImageError):
            imagemeta.check_info(info, me, "x")
    imagemeta.check_info({"children": [{"name": "file", "info": {"filename": me}}]}, me, "x")


async def test_the_jail_cannot_read_a_root_only_file(tmp_path: Path) -> None:
    """Even with the header checks skipped, a jailed convert of a qcow2 whose data file is
    a root-only host file fails, and its output holds none of that file."""
    jail = Jail(user=_jail_user())
    secret = tmp_path / "secret"
    secret.write_bytes(SECRET * 1024)
    secret.chmod(0o600)
    evil = tmp_path / "evil.qcow2"
    _qemu_img(
        "create", "-q", "-f", "qcow2", "-o", f"data_file={secret},data_file_raw=on", evil, "64K"
    )
    out = tmp_path / "out.raw"
    src, dst = os.open(evil, os.O_RDONLY), os.open(out, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        jail.lend(dst)
        with pytest.raises(ImageError, match="Permission denied"):
            await qemuimg.convert(
                fd_path(src), "qcow2", fd_path(dst), "raw", jail=jail, fds=[src, dst]
            )
    finally:
        os.close(src)
        os.close(dst)
    assert SECRET not in out.read_bytes()


def test_the_jail_limits_cpu_time(tmp_path: Path) -> None:
    """qemu-img over its CPU limit is stopped (prlimit), and reported as such."""
    jail = Jail(user=_jail_user(), cpu_s=1)
    raw = tmp_path / "big.raw"
    with raw.open("wb") as f:
        for _ in range(64):
            f.write(os.urandom(1 << 20))
    out = tmp_path / "out.qcow2"
    src, dst = os.open(raw, os.O_RDONLY), os.open(out, os.O_RDWR | os.O_CREAT, 0o600)
    jail.lend(dst)
    try:  # compressing 64 MiB of random data costs more than a CPU second
        args = ["convert", "-c", "-f", "raw", "-O", "qcow2", fd_path(src), fd_path(dst)]
        proc = subprocess.run(jail.argv(args), pass_fds=[src, dst], capture_output=True)
    finally:
        os.close(src)
        os.close(dst)
    assert proc.returncode == -signal.SIGXCPU, proc.stderr
    assert "CPU time limit" in qemuimg._killed(proc.returncode)


def _wait_until(cond: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def _paths(tmp: Path) -> HostPaths:
    paths = HostPaths(tmp / "import", tmp / "export", tmp / "work")
    paths.prepare()
    return paths


def test_publish_never_follows_a_link_planted_after_the_check(tmp_path: Path) -> None:
    """A symlink appearing at the target between the request and the end of the export
    makes the export fail (already_exists); the file it points at is untouched."""
    paths = _paths(tmp_path)
    victim = tmp_path / "victim"
    victim.write_text("root-owned\n")
    target = paths.target("out.raw", trusted=False)
    (paths.export_dir / "out.raw").symlink_to(victim)
    fd, tmp = paths.work_file(".exporting")
    os.write(fd, b"exported data")
    os.close(fd)
    try:
        with pytest.raises(AlreadyExistsError):
            paths.publish(tmp, target)
    finally:
        target.close()
    assert victim.read_text() == "root-owned\n" and not tmp.exists()
    assert oct((paths.work_dir.stat().st_mode) & 0o777) == oct(0o700)


def test_copy_sparse_keeps_content_and_holes(tmp_path: Path) -> None:
    src = tmp_path / "sparse"
    with src.open("wb") as f:
        f.truncate(64 << 20)
        f.seek(32 << 20)
        f.write(b"middle")
    dst = tmp_path / "copy"
    a, b = os.open(src, os.O_RDONLY), os.open(dst, os.O_WRONLY | os.O_CREAT, 0o600)
    copy_sparse(a, b)
    os.close(a)
    os.close(b)
    assert dst.read_bytes() == src.read_bytes()
    assert dst.stat().st_blocks * 512 < 1 << 20


def test_clean_work_removes_leftovers_and_stops_their_writers(tmp_path: Path) -> None:
    """What a killed daemon left (work files, old-style ``.importing`` files) is removed,
    and a jailed process still writing a work file is killed."""
    user = _jail_user()
    paths = HostPaths(tmp_path / "i", tmp_path / "e", tmp_path / "w", Jail(user=user))
    paths.prepare()
    fd, left = paths.work_file(".importing")
    paths.jail.lend(fd)
    os.close(fd)
    subdir = paths.work_subdir(".ova-")
    (subdir / "disk0").write_bytes(b"x")
    legacy = tmp_path / "images"
    legacy.mkdir()
    (legacy / ".old.qcow2.importing").write_bytes(b"x")
    (legacy / "kept.qcow2").write_bytes(b"x")
    held = os.open(left, os.O_WRONLY)  # as a jailed qemu-img holds it: inherited
    writer = subprocess.Popen(
        ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", "--",
         "sh", "-c", "echo started; exec sleep 60"],
        stdout=subprocess.PIPE, pass_fds=[held],
    )  # fmt: skip
    os.close(held)
    assert writer.stdout is not None and writer.stdout.readline() == b"started\n"
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    fd, export = paths.work_file(".exporting")  # an export's qemu-img runs as the daemon
    exporter = subprocess.Popen(["qemu-img", "info", str(fifo)], pass_fds=[fd])  # blocks
    os.close(fd)
    _wait_until(lambda: psutil.Process(exporter.pid).name() == "qemu-img")
    removed = paths.clean_work(legacy)
    assert writer.wait(10) < 0 and exporter.wait(10) < 0  # both killed
    assert sorted(removed) == sorted([left.name, export.name, subdir.name, ".old.qcow2.importing"])
    assert list(paths.work_dir.iterdir()) == []
    assert [p.name for p in legacy.iterdir()] == ["kept.qcow2"]


def test_import_and_export_dirs_come_from_settings_or_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defaults under the data directory; VIRTFLEET_IMPORT_DIR/EXPORT_DIR or the serve
    flags move them; the daemon creates them and a private (0700) work directory."""
    from virtfleet.app.bootstrap import _host_paths
    from virtfleet.app.settings import Settings

    plain = Settings(data_dir=tmp_path / "data")
    assert (plain.import_path, plain.export_path) == (
        tmp_path / "data/import",
        tmp_path / "data/export",
    )
    monkeypatch.setenv("VIRTFLEET_IMPORT_DIR", str(tmp_path / "in"))
    monkeypatch.setenv("VIRTFLEET_EXPORT_DIR", str(tmp_path / "out"))
    moved = Settings(data_dir=tmp_path / "data")
    assert (moved.import_path, moved.export_path) == (tmp_path / "in", tmp_path / "out")
    moved.export_dir = tmp_path / "flag"  # what `serve --export-dir` sets
    paths = _host_paths(moved)
    assert (paths.import_dir, paths.export_dir) == (tmp_path / "in", tmp_path / "flag")
    assert paths.import_dir.is_dir() and paths.export_dir.is_dir()
    assert paths.work_dir.stat().st_mode & 0o777 == 0o700
    if os.geteuid() == 0:
        assert paths.jail.user in ("virtfleet-img", "virtfleet-qemu")


def test_sources_others_could_change_or_the_jail_cannot_read_are_copied(tmp_path: Path) -> None:
    """A root-owned 0644 file is used as it is; a root-only file, a group-writable one
    and one owned by another user are first copied privately (same bytes, jail-readable)."""
    paths = HostPaths(tmp_path / "i", tmp_path / "e", tmp_path / "w", Jail(user=_jail_user()))
    paths.prepare()
    cases = {"plain": (0o644, None), "root-only": (0o600, None), "group-writable": (0o664, None),
             "users": (0o644, 65534)}  # fmt: skip
    for name, (mode, owner) in cases.items():
        path = tmp_path / name
        path.write_bytes(name.encode() * 1000)
        path.chmod(mode)
        if owner is not None:
            os.chown(path, owner, -1)
        fd = os.open(path, os.O_RDONLY)
        try:
            got, copy = imports.readable(fd, paths)
            assert (copy is None) == (name == "plain"), name
            if copy is not None:
                assert copy.read_bytes() == path.read_bytes() and paths.jail.can_read(got)
                os.close(got)
                copy.unlink()
        finally:
            os.close(fd)


def test_publish_across_file_systems_copies_into_an_exclusive_new_file(tmp_path: Path) -> None:
    """With the export directory on another file system (link() gives EXDEV), the export
    is copied into a file created O_EXCL|O_NOFOLLOW: same bytes, a planted link refused."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("needs /dev/shm on another file system than the test's tmp directory")
    export = Path(tempfile.mkdtemp(dir=shm))
    try:
        paths = HostPaths(tmp_path / "import", export, tmp_path / "work")
        paths.prepare()
        data = os.urandom(1 << 16)
        for name in ("out.raw", "planted.raw"):
            target = paths.target(name, trusted=False)
            if name == "planted.raw":
                (export / name).symlink_to(tmp_path / "victim")
            fd, tmp = paths.work_file(".exporting")
            os.write(fd, data)
            os.close(fd)
            try:
                if name == "planted.raw":
                    with pytest.raises(AlreadyExistsError):
                        paths.publish(tmp, target)
                else:
                    paths.publish(tmp, target)
            finally:
                target.close()
            assert not tmp.exists()
        assert (export / "out.raw").read_bytes() == data
        assert not (tmp_path / "victim").exists() and (export / "planted.raw").is_symlink()
    finally:
        shutil.rmtree(export)
