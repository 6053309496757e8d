"""Alert rules and fired alerts (incidents), kept in the run store's database.

A **rule** says what to watch (its ``kind`` and the kind's fields), where to tell
(``channels``: webhooks and e-mail), how long to stay quiet after a notification
(``cooldown_seconds``) and whether it is ``enabled``. Kinds:

- ``run_failed``: a run of ``pipeline`` (or of any pipeline) ended ``failed`` or ``dead``
  (``only_dead``: dead-lettered ones only). Clears when every job of the incident has
  left the dead letter (retried or deleted), or a later run of each pipeline involved
  succeeded, or no new failure came for ``quiet_seconds``.
- ``failure_rate``: over the last ``window_seconds``, more than ``threshold`` (a fraction,
  0..1) of at least ``min_runs`` runs (of ``pipeline``, or all) failed.
- ``backlog``: jobs waiting (in ``queue``, or all pools) above ``max_length``, or the
  oldest waiting job older than ``max_age_seconds``.
- ``worker_lost``: a worker's heartbeat vanished while it held jobs (it did not stop
  cleanly). Clears when no job is left running under a lost worker.
- ``schedule_missed``: a schedule's tick (of ``schedule_id``, or any schedule not paused)
  is more than ``grace_seconds`` overdue, or its last tick could not be enqueued.

An **alert** is one incident of a rule: ``firing`` from ``started_at``, ``resolved`` at
``resolved_at``; its ``notifications`` list every delivery attempt. At most one alert
per rule fires at a time (a unique ``open_key`` enforces it, even with two servers).

Synchronous SQLAlchemy Core, like the rest of the run store; async callers go through
``asyncio.to_thread``.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    TypeAdapter,
    field_validator,
    model_validator,
)
from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Engine,
    Float,
    Index,
    String,
    Table,
    Text,
    delete,
    insert,
    select,
    update,
)

from mimir.core.runstore.db import metadata
from mimir.core.runstore.rows import row_by_id

__all__ = [
    "KINDS",
    "Alert",
    "AlertStore",
    "BacklogRule",
    "Channel",
    "EmailChannel",
    "FailureRateRule",
    "Rule",
    "RuleIn",
    "RunFailedRule",
    "ScheduleMissedRule",
    "WebhookChannel",
    "WorkerLostRule",
    "alert_rules",
    "alerts",
    "parse_rule",
]

alert_rules = Table(
    "alert_rules",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("enabled", Boolean, nullable=False, default=True),
    #: The whole rule as given (JSON text of :data:`RuleIn`).
    Column("spec", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

alerts = Table(
    "alerts",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("rule_id", String(32), nullable=False, index=True),
    Column("rule_name", String(200), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("state", String(16), nullable=False),
    #: The rule id while firing, NULL once resolved: unique, so a rule has at most one
    #: firing alert whatever two evaluators might try.
    Column("open_key", String(32), nullable=True, unique=True),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("resolved_at", DateTime(timezone=True), nullable=True),
    Column("summary", Text, nullable=False),
    #: JSON object: what the evaluator saw (jobs, pipelines, figures).
    Column("details", Text, nullable=False),
    #: JSON list of delivery attempts: {event, channel, target, attempt, at, ok, error}.
    Column("notifications", Text, nullable=False),
    #: ``sent``, ``suppressed`` (within the cooldown) or ``none`` (no channels).
    Column("notify", String(16), nullable=False),
    Column("acked_at", DateTime(timezone=True), nullable=True),
    Column("acked_by", String(200), nullable=True),
    Column("last_notified", Float, nullable=True),
    Index("ix_alerts_started", "started_at"),
)

KINDS = ("run_failed", "failure_rate", "backlog", "worker_lost", "schedule_missed")

_EMAIL = re.compile(r"^[^@\s<>,;\"]+@[^@\s<>,;\"]+$")


class WebhookChannel(BaseModel):
    """POST a JSON body (Slack-compatible ``text`` plus structured fields) to ``url``."""

    model_config = ConfigDict(extra="forbid", strict=True)
    type: Literal["webhook"]
    url: str = Field(max_length=2000)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        from urllib.parse import urlsplit

        parts = urlsplit(value)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        if any(c in value for c in "\r\n\t "):
            raise ValueError("must not contain whitespace")
        return value


class EmailChannel(BaseModel):
    """Send an e-mail to ``to`` through ``MIMIR_SMTP_URL``."""

    model_config = ConfigDict(extra="forbid", strict=True)
    type: Literal["email"]
    to: list[str] = Field(min_length=1, max_length=50)

    @field_validator("to")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        for address in value:
            if len(address) > 254 or not _EMAIL.match(address):
                raise ValueError(f"not an e-mail address: {address[:80]!r}")
        return value


Channel = Annotated[WebhookChannel | EmailChannel, Field(discriminator="type")]


class _RuleBase(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    name: str = Field(min_length=1, max_length=200)
    channels: list[Channel] = Field(default_factory=list, max_length=20)
    #: Seconds after a notification during which a new incident of this rule is recorded
    #: but not notified (one incident is one notification; flapping stays quiet).
    cooldown_seconds: float = Field(default=300.0, ge=0, le=7 * 86400)
    enabled: StrictBool = True

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not value.strip() or any(ord(c) < 32 for c in value):
            raise ValueError("must be printable text")
        return value.strip()


class RunFailedRule(_RuleBase):
    kind: Literal["run_failed"]
    #: Only runs of this pipeline; ``None``: any pipeline.
    pipeline: str | None = Field(default=None, min_length=1, max_length=200)
    #: Only dead-lettered runs (lease lost with no attempts left, ...), not plain failures.
    only_dead: StrictBool = False
    #: Resolve after this many seconds without a new failure (0: never by time alone).
    quiet_seconds: float = Field(default=3600.0, ge=0, le=30 * 86400)


class FailureRateRule(_RuleBase):
    kind: Literal["failure_rate"]
    pipeline: str | None = Field(default=None, min_length=1, max_length=200)
    window_seconds: float = Field(default=900.0, gt=0, le=30 * 86400)
    #: Fraction of failed (and dead) runs, 0..1, above which the rule fires.
    threshold: float = Field(gt=0, lt=1)
    min_runs: int = Field(default=10, ge=1, le=1_000_000)


class BacklogRule(_RuleBase):
    kind: Literal["backlog"]
    #: A pool (``queue`` of the jobs); ``None``: all pools.
    queue: str | None = Field(default=None, min_length=1, max_length=200)
    max_length: int | None = Field(default=None, ge=0)
    max_age_seconds: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _one_limit(self) -> BacklogRule:
        if self.max_length is None and self.max_age_seconds is None:
            raise ValueError("max_length or max_age_seconds is required")
        return self


class WorkerLostRule(_RuleBase):
    kind: Literal["worker_lost"]


class ScheduleMissedRule(_RuleBase):
    kind: Literal["schedule_missed"]
    #: One schedule; ``None``: every enabled schedule.
    schedule_id: str | None = Field(default=None, min_length=1, max_length=64)
    #: A tick counts as missed once it is this many seconds overdue.
    grace_seconds: float = Field(default=60.0, gt=0, le=86400)


RuleIn = Annotated[
    RunFailedRule | FailureRateRule | BacklogRule | WorkerLostRule | ScheduleMissedRule,
    Field(discriminator="kind"),
]
_RULE_ADAPTER: TypeAdapter[Any] = TypeAdapter(RuleIn)


def parse_rule(data: Any) -> Any:
    """A rule model from a dict (raises :class:`pydantic.ValidationError`)."""
    return _RULE_ADAPTER.validate_python(data)


class Rule(BaseModel):
    """A stored rule: its id, times, and the rule as given (``spec``)."""

    id: str
    name: str
    kind: str
    enabled: bool
    created_at: datetime
    updated_at: datetime
    spec: dict[str, Any]

    def model(self) -> Any:
        return parse_rule(self.spec)


class Alert(BaseModel):
    id: str
    rule_id: str
    rule_name: str
    kind: str
    state: Literal["firing", "resolved"]
    started_at: datetime
    resolved_at: datetime | None = None
    summary: str
    details: dict[str, Any]
    notify: str
    notifications: list[dict[str, Any]]
    acked_at: datetime | None = None
    acked_by: str | None = None


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def now() -> datetime:
    return datetime.now(UTC)


def _rule_row(row: Any) -> Rule:
    return Rule(
        id=row.id,
        name=row.name,
        kind=row.kind,
        enabled=bool(row.enabled),
        created_at=_utc(row.created_at),
        updated_at=_utc(row.updated_at),
        spec=json.loads(row.spec),
    )


def _alert_row(row: Any) -> Alert:
    return Alert(
        id=row.id,
        rule_id=row.rule_id,
        rule_name=row.rule_name,
        kind=row.kind,
        state=row.state,
        started_at=_utc(row.started_at),
        resolved_at=_utc(row.resolved_at) if row.resolved_at else None,
        summary=row.summary,
        details=json.loads(row.details),
        notify=row.notify,
        notifications=json.loads(row.notifications),
        acked_at=_utc(row.acked_at) if row.acked_at else None,
        acked_by=row.acked_by,
    )


class AlertStore:
    """Rules and alerts over an engine (synchronous)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # -- rules -------------------------------------------------------------------------

    def create_rule(self, rule: Any) -> Rule:
        moment = now()
        rule_id = uuid.uuid4().hex[:16]
        with self.engine.begin() as conn:
            conn.execute(
                insert(alert_rules).values(
                    id=rule_id,
                    name=rule.name,
                    kind=rule.kind,
                    enabled=rule.enabled,
                    spec=rule.model_dump_json(),
                    created_at=moment,
                    updated_at=moment,
                )
            )
        found = self.get_rule(rule_id)
        assert found is not None
        return found

    def update_rule(self, rule_id: str, rule: Any) -> Rule | None:
        with self.engine.begin() as conn:
            done = conn.execute(
                update(alert_rules)
                .where(alert_rules.c.id == rule_id)
                .values(
                    name=rule.name,
                    kind=rule.kind,
                    enabled=rule.enabled,
                    spec=rule.model_dump_json(),
                    updated_at=now(),
                )
            )
        return self.get_rule(rule_id) if done.rowcount else None

    def delete_rule(self, rule_id: str) -> bool:
        with self.engine.begin() as conn:
            done = conn.execute(delete(alert_rules).where(alert_rules.c.id == rule_id))
            # A deleted rule's firing alert is closed quietly (nobody watches it any more).
            conn.execute(
                update(alerts)
                .where(alerts.c.open_key == rule_id)
                .values(state="resolved", open_key=None, resolved_at=now())
            )
        return bool(done.rowcount)

    def get_rule(self, rule_id: str) -> Rule | None:
        row = row_by_id(self.engine, alert_rules, rule_id)
        return _rule_row(row) if row else None

    def rules(self, enabled_only: bool = False) -> list[Rule]:
        query = select(alert_rules).order_by(alert_rules.c.created_at, alert_rules.c.id)
        if enabled_only:
            query = query.where(alert_rules.c.enabled.is_(True))
        with self.engine.connect() as conn:
            return [_rule_row(row) for row in conn.execute(query)]

    # -- alerts ------------------------------------------------------------------------

    def firing(self) -> dict[str, Alert]:
        """The firing alert of each rule, by rule id."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(alerts).where(alerts.c.state == "firing"))
            return {row.rule_id: _alert_row(row) for row in rows}

    def last_notified(self, rule_id: str) -> float | None:
        """When this rule last sent a firing notification (epoch seconds)."""
        with self.engine.connect() as conn:
            value = conn.execute(
                select(alerts.c.last_notified)
                .where(alerts.c.rule_id == rule_id, alerts.c.last_notified.is_not(None))
                .order_by(alerts.c.started_at.desc())
                .limit(1)
            ).scalar()
        return float(value) if value is not None else None

    def open_alert(
        self, rule: Rule, summary: str, details: dict[str, Any], notify: str
    ) -> Alert | None:
        """Start an incident of ``rule``; ``None`` when one is firing already."""
        from sqlalchemy.exc import IntegrityError

        alert_id = uuid.uuid4().hex[:16]
        moment = now()
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    insert(alerts).values(
                        id=alert_id,
                        rule_id=rule.id,
                        rule_name=rule.name,
                        kind=rule.kind,
                        state="firing",
                        open_key=rule.id,
                        started_at=moment,
                        summary=summary,
                        details=json.dumps(details, default=str),
                        notifications="[]",
                        notify=notify,
                        last_notified=moment.timestamp() if notify == "sent" else None,
                    )
                )
        except IntegrityError:
            return None
        return self.get(alert_id)

    def update_details(self, alert_id: str, summary: str, details: dict[str, Any]) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(alerts)
                .where(alerts.c.id == alert_id)
                .values(summary=summary, details=json.dumps(details, default=str))
            )

    def resolve(self, alert_id: str, details: dict[str, Any] | None = None) -> Alert | None:
        values: dict[str, Any] = {"state": "resolved", "open_key": None, "resolved_at": now()}
        if details is not None:
            values["details"] = json.dumps(details, default=str)
        with self.engine.begin() as conn:
            done = conn.execute(
                update(alerts)
                .where(alerts.c.id == alert_id, alerts.c.state == "firing")
                .values(**values)
            )
        return self.get(alert_id) if done.rowcount else None

    def record_attempts(self, alert_id: str, attempts: Sequence[dict[str, Any]]) -> None:
        """Append delivery attempts to an alert's ``notifications``."""
        with self.engine.begin() as conn:
            current = conn.execute(
                select(alerts.c.notifications).where(alerts.c.id == alert_id)
            ).scalar()
            if current is None:
                return
            merged = [*json.loads(current), *attempts][-200:]
            conn.execute(
                update(alerts)
                .where(alerts.c.id == alert_id)
                .values(notifications=json.dumps(merged))
            )

    def ack(self, alert_id: str, who: str) -> Alert | None:
        with self.engine.begin() as conn:
            done = conn.execute(
                update(alerts).where(alerts.c.id == alert_id).values(acked_at=now(), acked_by=who)
            )
        return self.get(alert_id) if done.rowcount else None

    def get(self, alert_id: str) -> Alert | None:
        row = row_by_id(self.engine, alerts, alert_id)
        return _alert_row(row) if row else None

    def list(
        self, state: str | None = None, rule_id: str | None = None, limit: int = 100
    ) -> list[Alert]:
        query = select(alerts).order_by(alerts.c.started_at.desc(), alerts.c.id.desc())
        if state:
            query = query.where(alerts.c.state == state)
        if rule_id:
            query = query.where(alerts.c.rule_id == rule_id)
        with self.engine.connect() as conn:
            return [_alert_row(row) for row in conn.execute(query.limit(limit))]
