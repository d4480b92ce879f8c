"""Taking an image file in from another member (``storage/imagefiles.py``): published only
when its length and sha256 are the holder's; too many, too few or other bytes are one-line
``image_transfer_failed`` errors with no file left and nothing recorded."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from virtfleet.errors import ImageTransferError
from virtfleet.state.memory import MemoryStore
from virtfleet.storage.imagefiles import ImageFiles, ImageLocation

DATA = b"qcow2-ish" * 1000


def _holder(data: bytes = DATA) -> ImageLocation:
    sha = hashlib.sha256(data).hexdigest()
    return ImageLocation(host="a", path="/a/tiny.qcow2", size_bytes=len(data), sha256=sha)


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(data), 4096):
        yield data[start : start + 4096]


async def _receive(tmp_path: Path, sent: bytes) -> tuple[ImageFiles, list[tuple[int, int]]]:
    files = ImageFiles(MemoryStore(), tmp_path, "b")
    seen: list[tuple[int, int]] = []

    async def progress(done: int, total: int) -> None:
        seen.append((done, total))

    await files.receive("tiny", "tiny.qcow2", _holder(), _chunks(sent), progress)
    return files, seen


async def test_the_whole_file_is_published_and_recorded(tmp_path: Path) -> None:
    files, seen = await _receive(tmp_path, DATA)
    (here,) = await files.locations("tiny")
    assert (tmp_path / "tiny.qcow2").read_bytes() == DATA
    assert (here.host, here.sha256, here.size_bytes) == ("b", _holder().sha256, len(DATA))
    assert seen[-1] == (len(DATA), len(DATA)) and len(seen) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.qcow2"]


@pytest.mark.parametrize(
    ("sent", "says"),
    [
        (DATA + b"x", "the sender sent more than the 9000 bytes expected"),
        (DATA[:5000], "image 'tiny' arrived truncated: 5000 of 9000 bytes"),
        (DATA[:-1] + b"!", "image 'tiny' arrived corrupt: sha256 "),
    ],
)
async def test_bad_bytes_leave_nothing(tmp_path: Path, sent: bytes, says: str) -> None:
    with pytest.raises(ImageTransferError) as err:
        await _receive(tmp_path, sent)
    assert err.value.message.startswith(says) and err.value.code == "image_transfer_failed"
    assert list(tmp_path.iterdir()) == []
