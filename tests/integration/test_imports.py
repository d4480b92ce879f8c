"""Importing foreign disk images through the daemon: raw, vmdk, vhdx, vpc and vdi files
made with qemu-img from one known raw source arrive in the store as qcow2 with the
same guest-visible content (``qemu-img compare``); bad files fail cleanly."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from virtfleet.client import ApiError
from virtfleet.client import imaging as calls

from .conftest import Daemon, module_daemon, wait_for

pytestmark = pytest.mark.integration
SIZE = 32 << 20


@pytest.fixture(scope="module")
def d(request: pytest.FixtureRequest, tiny_cache: Path) -> Iterator[Daemon]:
    yield from module_daemon(request)


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 32 MiB raw disk with random 64 KiB blocks every 3 MiB (holes in between)."""
    path = tmp_path_factory.mktemp("src") / "source.raw"
    with path.open("wb") as f:
        f.truncate(SIZE)
        for off in range(0, SIZE, 3 << 20):
            f.seek(off)
            f.write(os.urandom(65536))
    return path


def _qemu_img(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["qemu-img", *map(str, args)], capture_output=True, text=True)


def _store_files(d: Daemon) -> list[str]:
    return sorted(p.name for p in (d.data_dir / "images").iterdir())


@pytest.mark.parametrize("fmt", ["raw", "vmdk", "vhdx", "vpc", "vdi", "qcow2"])
def test_import_keeps_content(d: Daemon, source: Path, fmt: str) -> None:
    """The imported qcow2 is guest-identical to the raw source the foreign file was made of."""
    foreign = source if fmt == "raw" else source.with_suffix(f".{fmt}")
    if fmt != "raw":
        assert _qemu_img("convert", "-f", "raw", "-O", fmt, source, foreign).returncode == 0
    op = d.client.call(calls.import_image(f"imp-{fmt}", str(foreign)))
    done = d.client.wait_operation(op.id, timeout_s=120)
    assert done.status == "success", done
    image = d.client.get_image(f"imp-{fmt}")
    assert image.format == "qcow2" and image.kind == "image" and len(image.sha256) == 64
    assert image.virtual_size_bytes >= SIZE
    compare = _qemu_img("compare", "-f", "raw", "-F", "qcow2", source, image.path)
    assert compare.returncode == 0, compare.stdout + compare.stderr


def _bad_files(tmp: Path, source: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, expected error code)."""
    vmdk = tmp / "whole.vmdk"
    _qemu_img("convert", "-f", "raw", "-O", "vmdk", source, vmdk)
    truncated = tmp / "truncated.vmdk"
    truncated.write_bytes(vmdk.read_bytes()[: vmdk.stat().st_size // 3])
    corrupt = tmp / "corrupt.qcow2"
    _qemu_img("convert", "-f", "raw", "-O", "qcow2", source, corrupt)
    with corrupt.open("r+b") as f:  # point the L1 table past the end of the file
        f.seek(40)
        f.write((1 << 40).to_bytes(8, "big"))
    qed = tmp / "disk.qed"
    _qemu_img("convert", "-f", "raw", "-O", "qed", source, qed)
    outside = tmp / "outside.qcow2"
    _qemu_img("create", "-q", "-f", "qcow2", "-b", source, "-F", "raw", outside)
    loop1, loop2 = tmp / "loop1.qcow2", tmp / "loop2.qcow2"
    _qemu_img("create", "-q", "-f", "qcow2", "-u", "-b", loop2, "-F", "qcow2", loop1, "32M")
    _qemu_img("create", "-q", "-f", "qcow2", "-u", "-b", loop1, "-F", "qcow2", loop2, "32M")
    return {
        "truncated": (truncated, "image_error"),
        "corrupt": (corrupt, "image_error"),
        "unsupported": (qed, "invalid_input"),
        "outside": (outside, "unsafe_image"),
        "loop": (loop1, "unsafe_image"),
        "missing": (tmp / "nothing-here.raw", "not_found"),
    }


def test_bad_images_are_refused_and_leave_nothing(d: Daemon, source: Path, tmp_path: Path) -> None:
    """Truncated, corrupt, unsupported, backing outside the store, backing loop, missing:
    each is a one-line error with a stable code, and no file or record is left."""
    before, images = _store_files(d), [i.name for i in d.client.list_images()]
    for name, (path, code) in _bad_files(tmp_path, source).items():
        with pytest.raises(ApiError) as err:
            op = d.client.call(calls.import_image(f"bad-{name}", str(path)))
            done = d.client.wait_operation(op.id, timeout_s=60)
            raise ApiError(done.error_code or "", done.error_message or "", 0)
        assert err.value.code == code, (name, err.value)
        assert "\n" not in err.value.message
    with pytest.raises(ApiError) as err:
        d.client.call(calls.import_image("bad-fmt", str(source), fmt="iso"))
    assert err.value.code == "invalid_input"
    with pytest.raises(ApiError) as err:  # relative names are looked up in the import dir
        d.client.call(calls.import_image("bad-rel", "relative/path.raw"))
    assert err.value.code == "not_found" and "import/relative/path.raw" in err.value.message
    with pytest.raises(ApiError) as err:
        d.client.call(calls.import_image("bad-dev", "/dev/zero"))
    assert err.value.code == "invalid_input" and "not a regular file" in err.value.message
    assert _store_files(d) == before
    assert [i.name for i in d.client.list_images()] == images


def test_export_round_trip(d: Daemon, source: Path, tmp_path: Path) -> None:
    """An image exported as vmdk and raw has the same content; exports never overwrite."""
    op = d.client.call(calls.import_image("exp-src", str(source)))
    assert d.client.wait_operation(op.id, timeout_s=120).status == "success"
    for fmt in ("vmdk", "raw"):
        out = tmp_path / f"out.{fmt}"
        op = d.client.call(calls.export_image("exp-src", str(out), fmt))
        assert d.client.wait_operation(op.id, timeout_s=120).status == "success"
        assert _qemu_img("compare", "-f", "raw", "-F", fmt, source, out).returncode == 0
    with pytest.raises(ApiError) as err:
        d.client.call(calls.export_image("exp-src", str(tmp_path / "out.raw"), "raw"))
    assert err.value.code == "already_exists"


def test_forced_reimport_is_refused_while_in_use(d: Daemon, source: Path) -> None:
    """``force`` replaces an image, but not one a VM's disk is layered on (409 in_use)."""
    op = d.client.call(calls.import_image("used", str(source)))
    assert d.client.wait_operation(op.id, timeout_s=120).status == "success"
    d.create("user-vm", start=False, image="used")
    with pytest.raises(ApiError) as err:
        d.client.call(calls.import_image("used", str(source), force=True))
    assert err.value.code == "in_use" and "user-vm" in err.value.message


def _jailed_convert(d: Daemon) -> psutil.Process | None:
    """The daemon's qemu-img convert child (setpriv and prlimit exec into it), if any."""
    assert d.proc is not None
    for child in psutil.Process(d.proc.pid).children():
        with contextlib.suppress(psutil.Error):
            if "qemu-img" in child.cmdline() and "convert" in child.cmdline():
                return child
    return None


def test_a_killed_import_leaves_nothing_after_restart(d: Daemon, tmp_path: Path) -> None:
    """SIGKILL of the daemon mid-conversion (qemu-img held stopped so it is really mid-way):
    at the next start the work file and the orphaned qemu-img are gone, no image is made.
    (Last in this module: it restarts the module's daemon.)"""
    big = tmp_path / "big.raw"
    block = os.urandom(1 << 20)
    with big.open("wb") as f:  # 1 GiB of data: a conversion of seconds, not a fraction of one
        for _ in range(1024):
            f.write(block)
    op = d.client.call(calls.import_image("killed", str(big)))
    try:
        wait_for(lambda: _jailed_convert(d) is not None, 30, "qemu-img convert")
    except AssertionError as err:
        raise AssertionError(f"no qemu-img convert seen; {d.client.get_operation(op.id)}") from err
    qemu_img = _jailed_convert(d)
    assert qemu_img is not None
    qemu_img.suspend()
    work = d.data_dir / "work"
    assert [p.suffix for p in work.iterdir()] == [".importing"]
    d.kill9()
    d.start()
    assert list(work.iterdir()) == []
    assert not qemu_img.is_running() or qemu_img.status() == psutil.STATUS_ZOMBIE
    assert "killed" not in [i.name for i in d.client.list_images()]
    assert not (d.data_dir / "images" / "killed.qcow2").exists()
