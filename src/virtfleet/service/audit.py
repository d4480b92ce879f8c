"""Audit use cases: record a change request, query the log, and strip secrets from summaries.

Owns what a request summary may contain: ``summarize`` keeps the query and the
JSON body with every field whose name mentions a password, token, secret or
authorization replaced by ``***``, and bounds its size. Must not know HTTP
beyond those raw parts (the API's audit middleware hands them in) nor decide
who may read the log (the API's role guard does).
"""

from __future__ import annotations

import builtins
import json
from typing import Any
from urllib.parse import parse_qsl

from virtfleet.model.audit import AuditEntry, AuditQuery
from virtfleet.state.audit import AuditLog

MASK = "***"
SECRET_WORDS = ("password", "token", "secret", "authorization", "cookie")
MAX_SUMMARY_CHARS = 4096
MAX_STRING_CHARS = 256
MAX_LIMIT = 1000


def is_secret(name: str) -> bool:
    lowered = name.lower()
    return any(word in lowered for word in SECRET_WORDS)


def redact(value: Any) -> Any:
    """``value`` with secret-named fields masked at any depth and long strings cut."""
    if isinstance(value, dict):
        return {str(k): MASK if is_secret(str(k)) else redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    if isinstance(value, str) and len(value) > MAX_STRING_CHARS:
        return value[:MAX_STRING_CHARS] + "..."
    return value


def summarize(query_string: str, body: bytes, content_type: str, complete: bool) -> dict[str, Any]:
    """A secret-free summary of a request's query and body (``complete``: body not cut)."""
    summary: dict[str, Any] = {}
    if query_string:
        summary["query"] = redact(dict(parse_qsl(query_string, keep_blank_values=True)))
    if body:
        summary.update(_body_summary(body, content_type, complete))
    if len(json.dumps(summary, default=str)) > MAX_SUMMARY_CHARS:
        summary = {"body_bytes": len(body), "note": "summary too large"}
    return summary


def _body_summary(body: bytes, content_type: str, complete: bool) -> dict[str, Any]:
    if complete and "json" in content_type.lower():
        try:
            return {"body": redact(json.loads(body))}
        except ValueError:  # malformed JSON (UnicodeDecodeError included): size only
            pass
    return {"body_bytes": len(body)}


class AuditService:
    def __init__(self, log: AuditLog) -> None:
        self.log = log

    async def record(self, entry: AuditEntry) -> AuditEntry:
        """Append ``entry`` (its summary must already be redacted)."""
        return await self.log.append(entry)

    async def query(self, query: AuditQuery) -> builtins.list[AuditEntry]:
        """Entries matching ``query``, newest first; ``limit`` is capped at ``MAX_LIMIT``."""
        capped = query.model_copy(update={"limit": max(1, min(query.limit, MAX_LIMIT))})
        return await self.log.query(capped)
