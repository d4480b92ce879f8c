"""One-time join tokens (``cluster token create``): what they carry, that only their hash
is stored on a lease of their lifetime, and that ``consume`` admits one use before the
expiry — wrong, expired and reused tokens refused alike."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from virtfleet.errors import AuthError, ConflictError, InvalidInputError
from virtfleet.model.cluster import ClusterIdentity
from virtfleet.service.credentials import sha256_hex
from virtfleet.service.jointokens import REFUSED, JoinTokens, decode
from virtfleet.state.keys import JOIN_TOKENS
from virtfleet.state.memory import MemoryStore

ME = ClusterIdentity(
    api_url="https://10.0.0.1:8006", ca_fingerprint="AB:" * 31 + "AB", api_fingerprint="CD"
)


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


async def test_a_token_carries_the_cluster_and_admits_one_join() -> None:
    store, clock = MemoryStore(), Clock()
    tokens = JoinTokens(store, lambda: ME, clock)
    made = await tokens.create(600)
    carried = decode(made.token)
    assert (carried.api_url, carried.ca_fingerprint, carried.api_fingerprint) == (
        ME.api_url, ME.ca_fingerprint, "CD",
    )  # fmt: skip
    assert made.expires_at == clock.now + timedelta(seconds=600)
    (kv,) = await store.list(JOIN_TOKENS)
    assert kv.key == JOIN_TOKENS + sha256_hex(carried.secret) and kv.lease is not None
    assert carried.secret.encode() not in kv.value  # only its hash is kept
    await tokens.consume(carried.secret)
    with pytest.raises(AuthError, match=REFUSED):
        await tokens.consume(carried.secret)  # one use only
    with pytest.raises(AuthError, match=REFUSED):
        await tokens.consume("wrong")


async def test_an_expired_token_is_refused() -> None:
    store, clock = MemoryStore(), Clock()
    tokens = JoinTokens(store, lambda: ME, clock)
    secret = decode((await tokens.create(60)).token).secret
    clock.now += timedelta(seconds=61)
    with pytest.raises(AuthError, match=REFUSED):
        await tokens.consume(secret)


async def test_token_create_refusals_and_damaged_tokens() -> None:
    with pytest.raises(ConflictError, match="run cluster init first"):
        await JoinTokens(MemoryStore(), lambda: None).create()
    with pytest.raises(InvalidInputError, match="60 s to"):
        await JoinTokens(MemoryStore(), lambda: ME).create(5)
    with pytest.raises(InvalidInputError, match="not a join token"):
        decode("vf_abc.def")
    with pytest.raises(InvalidInputError, match="damaged"):
        decode("vfjoin1.!!!not-base64")
