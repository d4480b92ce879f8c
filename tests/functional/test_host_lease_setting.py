"""The host lease is a setting (``VIRTFLEET_HOST_LEASE_S``): the lab shortens it so a
cut-off host shows offline within seconds; the daemon's presence uses it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.functional.platform import make_platform
from virtfleet.host.member import LEASE_TTL_S


def test_the_host_lease_follows_the_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for each in ("a", "b"):
        (tmp_path / each).mkdir()
    monkeypatch.setenv("VIRTFLEET_HOST_LEASE_S", "4.5")
    platform, _ = make_platform(tmp_path / "a")
    assert platform.presence is not None and platform.presence.ttl_s == 4.5
    monkeypatch.delenv("VIRTFLEET_HOST_LEASE_S")
    platform, _ = make_platform(tmp_path / "b")
    assert platform.presence is not None and platform.presence.ttl_s == LEASE_TTL_S == 15.0
