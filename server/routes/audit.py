"""The audit log: ``GET /api/v1/audit?actor=&action=&since=&until=&limit=&cursor=``.

Entries newest first (keyset pagination: pass ``next_cursor`` back as ``cursor``). See
:mod:`mimir.server.runs.audit` for what is recorded, and what never is.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request, status
from pydantic import BaseModel

from mimir.core.runstore.audit import AuditEntry, AuditLog
from mimir.server.deps import DbDep
from mimir.server.routes.runs import SinceQ, UntilQ, parse_time

__all__ = ["AuditPage", "router"]

router = APIRouter(prefix="/api/v1/audit", tags=["audit"])


class AuditPage(BaseModel):
    entries: list[AuditEntry]
    #: Pass as ``cursor`` for the next (older) page; ``null`` at the end.
    next_cursor: str | None = None
    #: Entries this server dropped since it started (the writer fell behind a burst).
    dropped: int = 0


@router.get("", response_model=AuditPage)
async def list_audit(
    request: Request,
    db: DbDep,
    actor: Annotated[str | None, Query(max_length=200)] = None,
    action: Annotated[str | None, Query(max_length=200)] = None,
    since: SinceQ = None,
    until: UntilQ = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
) -> AuditPage:
    """Mutating calls, newest first, filtered by actor, action and time."""
    log = AuditLog(db)
    try:
        entries, next_cursor = await asyncio.to_thread(
            lambda: log.list(
                actor=actor,
                action=action,
                since=parse_time(since, "query.since"),
                until=parse_time(until, "query.until"),
                limit=limit,
                cursor=cursor,
            )
        )
    except ValueError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"cursor: {exc}") from None
    writer = getattr(request.app.state, "audit", None)
    return AuditPage(
        entries=entries, next_cursor=next_cursor, dropped=getattr(writer, "dropped", 0)
    )
