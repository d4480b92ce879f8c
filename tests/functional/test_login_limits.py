"""The login limiter under attack: parallel guesses are counted before their argon2 verify,
verifies are bounded, and a guesser cannot lock a user out from elsewhere."""

from __future__ import annotations

import asyncio

import httpx

from virtfleet.app.bootstrap import Platform
from virtfleet.model.auth import Role
from virtfleet.service.credentials import MAX_VERIFYING, Passwords

from .accounts import PASSWORD, Accounts
from .platform import FAST_HASHER


class CountingPasswords(Passwords):
    """``Passwords`` that counts argon2 verifies and the most running at once."""

    def __init__(self) -> None:
        super().__init__(FAST_HASHER)
        self.verifies = 0
        self.running = 0
        self.most = 0

    async def _verify(self, password_hash: str | None, password: str) -> bool:
        self.verifies += 1
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            await asyncio.sleep(0)  # let the other logins reach this point
            return await super()._verify(password_hash, password)
        finally:
            self.running -= 1


async def _login(client: httpx.AsyncClient, username: str, password: str) -> int:
    r = await client.post("/1.0/login", json={"username": username, "password": password})
    return r.status_code


def _counting(platform: Platform) -> CountingPasswords:
    counting = CountingPasswords()
    platform.services.auth.passwords = counting
    return counting


async def test_forty_parallel_guesses_get_five_verifies(
    accounts: Accounts, platform: Platform
) -> None:
    """40 guesses at once from one address: 5 are evaluated (401), 35 refused (429) unseen."""
    await accounts.user(Role.ADMIN)
    counting = _counting(platform)
    client = accounts.anonymous(peer="203.0.113.5")
    codes = await asyncio.gather(*(_login(client, "ada", f"guess{n}") for n in range(40)))
    assert sorted(codes) == [401] * 5 + [429] * 35
    assert counting.verifies == 5


async def test_verifies_are_bounded_across_sources(accounts: Accounts, platform: Platform) -> None:
    """Guesses from 30 addresses at once never run more than MAX_VERIFYING argon2 verifies."""
    await accounts.user(Role.ADMIN)
    counting = _counting(platform)
    clients = [accounts.anonymous(peer=f"198.51.100.{n}") for n in range(30)]
    codes = await asyncio.gather(*(_login(c, "ada", "guess") for c in clients))
    assert set(codes) == {401}
    assert counting.verifies == 30 and counting.most <= MAX_VERIFYING


async def test_a_guesser_cannot_lock_the_admin_out_from_elsewhere(accounts: Accounts) -> None:
    """An attacker's failures lock the (user, attacker) pair only: the admin still logs in."""
    await accounts.user(Role.ADMIN)
    attacker = accounts.anonymous(peer="203.0.113.66")
    for _ in range(8):
        await _login(attacker, "ada", "guess")
    assert await _login(attacker, "ada", PASSWORD) == 429
    assert await _login(accounts.anonymous(peer="192.0.2.10"), "ada", PASSWORD) == 200


async def test_one_ipv6_host_is_one_source(accounts: Accounts) -> None:
    """Addresses of one IPv6 /64 share a budget: rotating through them does not help."""
    await accounts.user(Role.ADMIN)
    for n in range(5):
        client = accounts.anonymous(peer=f"2001:db8:1:2::{n + 1:x}")
        assert await _login(client, "ada", "guess") == 401
    assert await _login(accounts.anonymous(peer="2001:db8:1:2::99"), "ada", "guess") == 429
    assert await _login(accounts.anonymous(peer="2001:db8:1:3::1"), "ada", PASSWORD) == 200
