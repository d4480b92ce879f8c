"""Pure rules of access control: role order, secret shapes, login throttling, audit redaction."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from virtfleet.errors import InvalidInputError, InvalidNameError, RateLimitedError
from virtfleet.model.audit import AuditEntry, AuditQuery
from virtfleet.model.auth import Role
from virtfleet.service.audit import MASK, redact, summarize
from virtfleet.service.auth import validate_username
from virtfleet.service.credentials import (
    LoginLimiter,
    check_password,
    source_net,
    split_secret,
)


def test_roles_are_ordered() -> None:
    """admin > operator > viewer; ``at_most`` picks the lesser."""
    assert Role.ADMIN.allows(Role.OPERATOR) and Role.OPERATOR.allows(Role.VIEWER)
    assert not Role.VIEWER.allows(Role.OPERATOR) and not Role.OPERATOR.allows(Role.ADMIN)
    assert Role.ADMIN.at_most(Role.VIEWER) is Role.VIEWER
    assert Role.OPERATOR.at_most(Role.ADMIN) is Role.OPERATOR


@pytest.mark.parametrize(
    ("presented", "expected"),
    [
        ("vf_0123456789abcdef.s3cr3t-_x", ("0123456789abcdef", "s3cr3t-_x")),
        ("vf_0123456789abcdef.", None),
        ("vf_0123456789abcde.secret", None),  # id too short
        ("xx_0123456789abcdef.secret", None),
        ("vf_0123456789abcdef", None),
        ("vf_../../../../etc.x", None),
    ],
)
def test_split_secret(presented: str, expected: tuple[str, str] | None) -> None:
    """Only ``vf_<16 alnum>.<secret>`` is a token; anything else never reaches the store."""
    assert split_secret(presented, "vf_") == expected


def test_password_policy() -> None:
    assert check_password("eight ch") == "eight ch"
    for bad in ("short", "x" * 1025):
        with pytest.raises(InvalidInputError):
            check_password(bad)


@pytest.mark.parametrize("name", ["", "Admin", "root@local", "anonymous", "-x", "a" * 33, "a b"])
def test_bad_usernames(name: str) -> None:
    with pytest.raises(InvalidNameError):
        validate_username(name)


def test_limiter_counts_failures_per_key_in_a_window() -> None:
    """Five failures lock a key for the rest of the minute; others keys are untouched."""
    now = [1000.0]
    limiter = LoginLimiter(max_failures=5, window_s=60, clock=lambda: now[0])
    for _ in range(5):
        limiter.check("user:a", "addr:x")
        limiter.failed("user:a", "addr:x")
    with pytest.raises(RateLimitedError, match="try again in 60 s"):
        limiter.check("user:a")
    limiter.check("user:b", "addr:y")
    now[0] += 60
    limiter.check("user:a", "addr:x")


def test_limiter_success_clears_only_that_key() -> None:
    limiter = LoginLimiter(max_failures=2, clock=lambda: 0.0)
    limiter.failed("user:a", "addr:x")
    limiter.succeeded("user:a")
    limiter.failed("user:a", "addr:x")
    limiter.check("user:a")
    with pytest.raises(RateLimitedError):
        limiter.check("addr:x")


def test_limiter_counts_an_attempt_before_it_is_evaluated() -> None:
    """``attempt`` checks and counts in one step; ``forgive`` takes a success back."""
    limiter = LoginLimiter(max_failures=2, clock=lambda: 5.0)
    stamp = limiter.attempt("pair", "addr:x")
    limiter.attempt("pair", "addr:x")
    with pytest.raises(RateLimitedError):
        limiter.attempt("pair")
    limiter.forgive(stamp, "addr:x")
    limiter.attempt("addr:x")
    with pytest.raises(RateLimitedError):
        limiter.check("addr:x")


@pytest.mark.parametrize(
    ("source", "net"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("unix", "unix"),
    ],
)
def test_login_sources_are_limited_by_network(source: str, net: str) -> None:
    assert source_net(source) == net


def test_limiter_stays_bounded() -> None:
    now = [0.0]
    limiter = LoginLimiter(max_keys=10, window_s=1, clock=lambda: now[0])
    for n in range(100):
        now[0] += 0.01
        limiter.failed(f"user:{n}")
        limiter.check(f"user:never-failed-{n}")
    assert len(limiter._failures) <= 10


def test_redact_masks_secret_fields_at_any_depth() -> None:
    data = {
        "username": "u",
        "password": "p",
        "current_password": "c",
        "nested": [{"api_token": "t", "keep": 1}],
        "Client_Secret": "s",
        "note": "x" * 300,
    }
    out = redact(data)
    assert out["username"] == "u" and out["nested"][0]["keep"] == 1
    assert out["password"] == out["current_password"] == out["Client_Secret"] == MASK
    assert out["nested"][0]["api_token"] == MASK
    assert len(out["note"]) < 300


def test_summarize_keeps_only_what_is_safe() -> None:
    """JSON bodies are kept redacted; other or cut bodies only by size; the query redacted."""
    body = b'{"name": "web", "password": "pw"}'
    assert summarize("force=true&token=abc", body, "application/json", True) == {
        "query": {"force": "true", "token": MASK},
        "body": {"name": "web", "password": MASK},
    }
    assert summarize("", body, "application/json", False) == {"body_bytes": len(body)}
    assert summarize("", b"password=pw", "application/x-www-form-urlencoded", True) == {
        "body_bytes": 11
    }
    assert summarize("", b"{not json", "application/json", True) == {"body_bytes": 9}
    huge = b'{"items": [' + b",".join(b'"abcdefghij"' for _ in range(1000)) + b"]}"
    assert summarize("", huge, "application/json", True)["note"] == "summary too large"


def test_audit_query_takes_naive_times_as_utc() -> None:
    entry = AuditEntry(actor="a", source="unix", method="POST", path="/1.0/x", status=200)
    naive = (entry.time - timedelta(seconds=1)).replace(tzinfo=None)
    query = AuditQuery(since=naive, method="post", path_prefix="/1.0/")
    assert query.since is not None and query.since.tzinfo is UTC
    assert query.matches(entry)
    assert not AuditQuery(until=datetime(2000, 1, 1)).matches(entry)
