"""A daemon killed during ``backup create`` or ``backup restore`` left work files: at the next
start they are gone (fleecing targets and restore temporaries next to the disks, partial
chunks and manifests in the repository's ``tmp/``), while disks, finished backups and their
chunks stay byte for byte. (QEMU-side leftovers: tests/integration/test_backup_faults.py.)"""

from __future__ import annotations

from pathlib import Path

from tests.functional.platform import make_platform, running


def _plant(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


async def test_start_removes_work_files_of_killed_backups_and_restores(tmp_path: Path) -> None:
    platform, _ = make_platform(tmp_path)
    disks, repo = platform.settings.disks_dir, platform.settings.backup_repo_dir
    leftovers = [
        _plant(disks / "web" / ".backup-20261207t080000z-abcdef-root.qcow2"),  # fleecing target
        _plant(disks / "web" / ".restore-root.raw"),  # restore over an existing VM
        _plant(disks / "gone" / ".restore-root.qcow2"),  # restore into a new VM, record lost
        _plant(repo / "tmp" / "chunk-0123abcd-77-140000"),  # a chunk being written
        _plant(repo / "tmp" / "manifest-20261207t080000z-abcdef.json"),  # before its rename
    ]
    kept = {
        p: p.read_bytes()
        for p in (
            _plant(disks / "web" / "root.qcow2", b"disk"),
            _plant(repo / "backups" / "web" / "20261206t080000z-123456.json", b"{}"),
            _plant(repo / "chunks" / "01" / "0123.zst", b"chunk"),  # unreferenced: gc's job
        )
    }
    async with running(platform):
        assert [p for p in leftovers if p.exists()] == []
        assert {p: p.read_bytes() for p in kept} == kept


async def test_start_leaves_a_missing_repository_alone(tmp_path: Path) -> None:
    """No repository yet: start-up does not create one (it may be a mount not there yet)."""
    platform, _ = make_platform(tmp_path)
    async with running(platform):
        assert not platform.settings.backup_repo_dir.exists()
