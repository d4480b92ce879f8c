"""Unit rules of the viewer redaction: cloud-init secrets are masked wherever they sit
below a ``cloud_init`` key, public parts stay."""

from __future__ import annotations

from virtfleet.api.redaction import MASK, mask_cloud_init

SECRETS = {
    "hostname": "h",
    "user_data": "#cloud-config\npassword: x\n",
    "network_config": "psk: x",
    "runcmd": ["echo x"],
    "write_files": [{"path": "/p", "content": "x", "permissions": "0600"}],
}
MASKED = {
    "hostname": "h",
    "user_data": MASK,
    "network_config": MASK,
    "runcmd": [MASK],
    "write_files": [{"path": "/p", "content": MASK, "permissions": "0600"}],
}


def test_settings_are_masked_at_any_depth() -> None:
    data = {"spec": {"cloud_init": SECRETS}, "other": [{"cloud_init": SECRETS}]}
    assert mask_cloud_init(data) == {
        "spec": {"cloud_init": MASKED},
        "other": [{"cloud_init": MASKED}],
    }


def test_wrapped_settings_are_masked_too() -> None:
    """A template's effective settings wrap the value: ``{"value": ..., "set_by": ...}``."""
    wrapped = {"effective": {"cloud_init": {"value": SECRETS, "set_by": "template"}}}
    masked = mask_cloud_init(wrapped)
    assert masked == {"effective": {"cloud_init": {"value": MASKED, "set_by": "template"}}}


def test_nothing_else_changes() -> None:
    data = {"user_data": "not under cloud_init", "cloud_init": None, "n": 1}
    assert mask_cloud_init(data) == data
