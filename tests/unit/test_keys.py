"""The store's key layout (state/keys.py): project things under /projects/default/,
cluster things global."""

from __future__ import annotations

from virtfleet.state import keys


def test_project_things_have_a_project_segment() -> None:
    assert keys.instance_key("web", "spec") == "/projects/default/instances/web/spec"
    assert keys.instance_prefix("web") == "/projects/default/instances/web/"
    assert keys.IMAGES == "/projects/default/images/"
    assert keys.NETWORKS == "/projects/default/networks/"
    assert keys.SCHEDULES == "/projects/default/backup-schedules/"
    assert keys.project_root("other") == "/projects/other/"


def test_cluster_things_stay_global() -> None:
    assert keys.alive_key("h1") == "/hosts/h1/alive" and keys.host_key("h1") == "/hosts/h1"
    assert (keys.OPERATIONS, keys.EVENTS, keys.USERS, keys.MACS) == (
        "/operations/",
        "/events/",
        "/users/",
        "/macs/",
    )
    assert keys.claim_scope("leader") == "/claims/leader/"


def test_instance_name_of_reads_only_instance_keys() -> None:
    """The name of an instance's key; None for the old layout, another kind or another
    project (another project's ``web`` is not this one's)."""
    assert keys.instance_name_of(keys.instance_key("web", "owner")) == "web"
    assert keys.instance_name_of("/instances/web/spec") is None
    assert keys.instance_name_of("/projects/default/images/web") is None
    assert keys.instance_name_of("/projects/other/instances/web/spec") is None
    assert keys.instance_name_of(keys.INSTANCES) is None
