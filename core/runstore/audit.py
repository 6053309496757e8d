"""The audit log: one row per mutating API call, kept in the run store's database.

Each entry holds the time, the actor (``token`` when the API token was presented,
``local`` for a loopback caller without one, else the client address, or
``trigger:<id>`` for a webhook delivery), the action (derived from the route template,
``POST /api/v1/pipelines/{name}`` -> ``pipelines.create``), the target (the call's path
parameters, e.g. ``{"name": "etl"}``), the outcome (HTTP status) and the request id.
Never a body, query string or header: secrets have no way in.

:meth:`AuditLog.write` inserts a batch in one transaction; :meth:`AuditLog.list` reads
newest first with an opaque keyset cursor.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import (
    Column,
    DateTime,
    Engine,
    Float,
    Index,
    Integer,
    String,
    Table,
    Text,
    and_,
    insert,
    or_,
    select,
)

from mimir.core.runstore.db import metadata

__all__ = ["AuditEntry", "AuditLog", "audit", "decode_cursor", "encode_cursor"]

audit = Table(
    "audit",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("actor", String(200), nullable=False),
    Column("action", String(200), nullable=False),
    Column("method", String(10), nullable=False),
    #: The route template (``/api/v1/pipelines/{name}``), or the raw path when no route
    #: matched (a 404).
    Column("route", String(500), nullable=False),
    #: JSON object of the path parameters.
    Column("target", Text, nullable=False),
    Column("outcome", Integer, nullable=False),
    Column("request_id", String(64), nullable=True),
    Column("duration_ms", Float, nullable=True),
    Index("ix_audit_at_id", "at", "id"),
    Index("ix_audit_actor_at", "actor", "at"),
    Index("ix_audit_action_at", "action", "at"),
)


class AuditEntry(BaseModel):
    id: int
    at: datetime
    actor: str
    action: str
    method: str
    route: str
    target: dict[str, Any]
    outcome: int
    request_id: str | None = None
    duration_ms: float | None = None


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def encode_cursor(entry: AuditEntry) -> str:
    raw = json.dumps([entry.at.isoformat(), entry.id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, int]:
    """The (time, id) of a cursor; raises ``ValueError`` when it is not one."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        at, entry_id = json.loads(base64.urlsafe_b64decode(padded.encode()))
        return _utc(datetime.fromisoformat(at)), int(entry_id)
    except Exception as exc:
        raise ValueError("not a cursor of this list") from exc


class AuditLog:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def write(self, entries: Sequence[dict[str, Any]]) -> int:
        """Insert entries (dicts of the table's columns, ``target`` as a dict)."""
        if not entries:
            return 0
        rows = [{**e, "target": json.dumps(e.get("target") or {}, sort_keys=True)} for e in entries]
        with self.engine.begin() as conn:
            conn.execute(insert(audit), rows)
        return len(rows)

    def list(
        self,
        *,
        actor: str | None = None,
        action: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> tuple[list[AuditEntry], str | None]:
        """Entries newest first, and the cursor of the next page (``None`` at the end)."""
        query = select(audit)
        if actor:
            query = query.where(audit.c.actor == actor)
        if action:
            query = query.where(audit.c.action == action)
        if since:
            query = query.where(audit.c.at >= since)
        if until:
            query = query.where(audit.c.at < until)
        if cursor:
            at, entry_id = decode_cursor(cursor)
            query = query.where(or_(audit.c.at < at, and_(audit.c.at == at, audit.c.id < entry_id)))
        query = query.order_by(audit.c.at.desc(), audit.c.id.desc()).limit(limit + 1)
        with self.engine.connect() as conn:
            rows = list(conn.execute(query))
        out = [
            AuditEntry(
                id=row.id,
                at=_utc(row.at),
                actor=row.actor,
                action=row.action,
                method=row.method,
                route=row.route,
                target=json.loads(row.target),
                outcome=row.outcome,
                request_id=row.request_id,
                duration_ms=row.duration_ms,
            )
            for row in rows[:limit]
        ]
        next_cursor = encode_cursor(out[-1]) if len(rows) > limit and out else None
        return out, next_cursor

    def count(self) -> int:
        from sqlalchemy import func

        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(audit)).scalar() or 0)
