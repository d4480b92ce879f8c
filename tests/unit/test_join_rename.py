"""Keys of a joining host's instances that come in under a new name (``--rename-suffix``):
the instance's keys move, its spec names it, a MAC claim names it; nothing else changes."""

from __future__ import annotations

import json

from virtfleet.state.keys import MACS, instance_key
from virtfleet.state.transfer import rename_key

RENAMED = {"web": "web-2"}


def test_an_instance_key_moves_and_its_spec_names_the_new_name() -> None:
    spec = json.dumps({"name": "web", "memory_mib": 256}).encode()
    key, value = rename_key(instance_key("web", "spec"), spec, RENAMED)
    assert key == instance_key("web-2", "spec")
    assert json.loads(value) == {"name": "web-2", "memory_mib": 256}
    status = b'{"power": "stopped"}'
    assert rename_key(instance_key("web", "status"), status, RENAMED) == (
        instance_key("web-2", "status"),
        status,
    )


def test_a_mac_claim_names_the_new_name_and_others_stay() -> None:
    assert rename_key(MACS + "52:54:00:00:00:01", b"web", RENAMED) == (
        MACS + "52:54:00:00:00:01",
        b"web-2",
    )
    assert rename_key(MACS + "52:54:00:00:00:02", b"db", RENAMED) == (
        MACS + "52:54:00:00:00:02",
        b"db",
    )
    spec = b'{"name": "webby"}'
    assert rename_key(instance_key("webby", "spec"), spec, RENAMED) == (
        instance_key("webby", "spec"),
        spec,
    )
