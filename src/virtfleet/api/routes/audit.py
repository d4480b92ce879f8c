"""Routes of ``/1.0/audit``: query the audit log (admins only). Read-only.

Handlers only parse filters and call ``AuditService``. Must not write entries
(the audit middleware does).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query

from virtfleet.api.auth import ADMIN
from virtfleet.api.deps import ServicesDep
from virtfleet.model.audit import AuditEntry, AuditQuery
from virtfleet.service.audit import MAX_LIMIT

router = APIRouter(prefix="/1.0/audit", tags=["audit"], dependencies=[ADMIN])


@router.get("")
async def list_audit(
    services: ServicesDep,
    actor: str | None = None,
    method: str | None = None,
    path: Annotated[str | None, Query(description="path prefix")] = None,
    since: datetime | None = None,
    until: datetime | None = None,
    status: Annotated[int | None, Query(ge=100, le=599)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
) -> list[AuditEntry]:
    """Entries matching every filter given, newest first."""
    query = AuditQuery(
        actor=actor,
        method=method,
        path_prefix=path,
        since=since,
        until=until,
        status=status,
        limit=limit,
    )
    return await services.audit.query(query)
