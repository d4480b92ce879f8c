"""Memory sizes as the CLI accepts and prints them."""

from __future__ import annotations

import pytest

from virtfleet.cli.sizes import format_bytes, format_mib, parse_size_mib


@pytest.mark.parametrize(
    ("text", "mib"),
    [
        ("512M", 512),
        ("512m", 512),
        ("2G", 2048),
        ("2g", 2048),
        ("1.5G", 1536),
        ("1024", 1024),
        ("512MiB", 512),
        ("2GB", 2048),
        ("1T", 1024 * 1024),
        ("2048K", 2),
        (" 64M ", 64),
    ],
)
def test_parse_size(text: str, mib: int) -> None:
    """Suffixes K/M/G/T (with optional B/iB, any case) are binary units; plain numbers are MiB."""
    assert parse_size_mib(text) == mib


BAD = ["", "M", "12X", "0", "0M", "-1G", "1.3M", "100K", "1,5G", "2 GBs"]


@pytest.mark.parametrize("text", BAD)
def test_parse_size_rejects(text: str) -> None:
    """Anything not a positive whole number of MiB is a ValueError with a one-line reason."""
    with pytest.raises(ValueError, match="invalid size"):
        parse_size_mib(text)


def test_format_sizes() -> None:
    """Whole and half GiB print as GiB, the rest as MiB; bytes scale to the nearest unit."""
    assert [format_mib(m) for m in (256, 1024, 1536, 1000)] == [
        "256 MiB",
        "1 GiB",
        "1.5 GiB",
        "1000 MiB",
    ]
    assert format_bytes(16 * 1024 * 1024) == "16.0 MiB"
    assert format_bytes(12) == "12 B"
