"""ETags and the conditional-change claim in isolation (store-level compare-and-swap)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from virtfleet.api.conditional import etag_of, parse_if_match
from virtfleet.errors import PreconditionFailedError
from virtfleet.model.instance import DesiredState, InstanceSpec
from virtfleet.service.preconditions import Version, claim, version_of
from virtfleet.state.memory import MemoryStore
from virtfleet.state.repos import InstanceRepo


@pytest.fixture
async def repo() -> AsyncIterator[InstanceRepo]:
    store = MemoryStore()
    repo = InstanceRepo(store)
    await repo.create(InstanceSpec(name="demo"), DesiredState())
    yield repo
    await store.close()


def test_etag_round_trips() -> None:
    version = Version(12, 345)
    assert etag_of(version) == '"12-345"'
    assert parse_if_match(etag_of(version)) == {version}


@pytest.mark.parametrize("value", [None, "*", " * "])
def test_absent_or_star_is_unconditional(value: str | None) -> None:
    assert parse_if_match(value) is None


def test_lists_keep_strong_tags_and_drop_the_rest() -> None:
    """Weak (W/), unquoted, non-numeric and oversized entries match nothing."""
    parsed = parse_if_match('"1-2", W/"3-4", 5-6, "a-b", "7-8", "1' + "9" * 30 + '-1"')
    assert parsed == {Version(1, 2), Version(7, 8)}
    assert parse_if_match("") == frozenset()


async def test_claim_at_the_current_version_rewrites_desired(repo: InstanceRepo) -> None:
    """A successful claim moves the desired revision (so the ETag) and keeps its content."""
    rec = await repo.get("demo")
    await claim(repo.store, rec, {version_of(rec)})
    after = await repo.get("demo")
    assert after.desired == rec.desired
    assert after.desired_revision > rec.desired_revision
    assert after.spec_revision == rec.spec_revision


async def test_claim_fails_when_a_write_got_in_between(repo: InstanceRepo) -> None:
    """The version matched when read, but the desired key moved before the claim: 412, no write."""
    rec = await repo.get("demo")
    await repo.put_desired("demo", DesiredState(generation=5))
    revision = await repo.store.revision()
    with pytest.raises(PreconditionFailedError):
        await claim(repo.store, rec, {version_of(rec)})
    assert await repo.store.revision() == revision


async def test_claim_fails_when_the_spec_moved(repo: InstanceRepo) -> None:
    rec = await repo.get("demo")
    await repo.put_spec(InstanceSpec(name="demo", vcpus=2))
    with pytest.raises(PreconditionFailedError):
        await claim(repo.store, rec, {version_of(rec)})


async def test_claim_with_another_version_fails_and_none_always_passes(repo: InstanceRepo) -> None:
    rec = await repo.get("demo")
    with pytest.raises(PreconditionFailedError):
        await claim(repo.store, rec, {Version(0, 0)})
    revision = await repo.store.revision()
    await claim(repo.store, rec, None)
    assert await repo.store.revision() == revision
