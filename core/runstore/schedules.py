"""Schedules and webhook triggers: their tables, models, validation and fire times.

A **schedule** runs a pipeline (a stored one by name or file, or an inline definition)
on a ``cron`` expression (5 fields, or 6 with a leading seconds field) or an
``interval`` (a Go duration such as ``30s`` or ``5m``), in an IANA ``timezone``, between
``start_at`` and ``end_at``. The server's scheduler (``mimir.server.runs.scheduler``)
reads the due rows of :data:`schedules`, enqueues each tick with the idempotency key
:func:`tick_key` and advances ``next_tick_ms`` with a conditional UPDATE
(:meth:`ScheduleStore.advance`), so any number of servers fire each tick once.

Fire times of a cron schedule follow the wall clock of its time zone, and a daylight
saving change neither skips nor doubles a run (:func:`next_fire`):

- a wall time that does not exist (spring forward: ``02:30`` in Europe/Berlin on the last
  Sunday of March) fires at the same distance after the change (``03:30``) — unless the
  hour field is ``*``, whose runs simply continue in the new hour;
- a wall time that exists twice (fall back: ``02:30`` on the last Sunday of October) fires
  at its first occurrence only — unless the hour field is ``*``, which fires through both
  hours, as a clock that only counts minutes would.

A **trigger** runs a pipeline when ``POST /api/v1/hooks/{id}`` is called with its secret
(a bearer token or an HMAC-SHA256 signature of the body). The secret is kept in the
database as is, because checking an HMAC signature needs it; it is shown once, when the
trigger is made.
"""

from __future__ import annotations

import builtins
import hashlib
import secrets
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from pydantic import BaseModel, Field, field_validator, model_validator
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Engine,
    Index,
    Integer,
    String,
    Table,
    Text,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from mimir.core.durations import parse_duration
from mimir.core.errors import MimirError
from mimir.core.pipeline.requests import PipelineRequest
from mimir.core.queue.models import Priority
from mimir.core.runstore.db import metadata
from mimir.core.runstore.rows import delete_by_id, row_by_id

__all__ = [
    "MISFIRE_GRACE_MS",
    "REDACTED_SECRET",
    "Misfire",
    "Overlap",
    "PipelineTarget",
    "ScheduleExistsError",
    "ScheduleIn",
    "ScheduleNotFoundError",
    "ScheduleRow",
    "ScheduleStore",
    "TriggerExistsError",
    "TriggerIn",
    "TriggerNotFoundError",
    "TriggerRow",
    "TriggerStore",
    "hook_delivery_key",
    "hook_rate_key",
    "jitter_seconds",
    "new_secret",
    "next_fire",
    "next_fires",
    "schedules",
    "tick_key",
    "triggers",
]

#: A tick due longer ago than this when the scheduler sees it counts as missed (the
#: server was down or stalled): the schedule's misfire policy decides what runs.
MISFIRE_GRACE_MS = 5_000

schedules = Table(
    "schedules",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(200), nullable=False, unique=True),
    #: The schedule as given (a :class:`ScheduleIn` as JSON).
    Column("spec", Text, nullable=False),
    Column("paused", Boolean, nullable=False, default=False),
    #: The next tick (Unix ms); NULL once the schedule has ended (past ``end_at``).
    Column("next_tick_ms", BigInteger, nullable=True),
    #: The newest tick that fired (Unix ms), its job, and why the last tick failed.
    Column("last_tick_ms", BigInteger, nullable=True),
    Column("last_job_id", String(64), nullable=True),
    Column("last_error", Text, nullable=True),
    #: Grows with every change made through the API (the scheduler's UPDATE checks it).
    Column("version", Integer, nullable=False, default=0),
    Column("created_ms", BigInteger, nullable=False),
    Column("updated_ms", BigInteger, nullable=False),
    Index("ix_schedules_due", "paused", "next_tick_ms"),
)

triggers = Table(
    "triggers",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(200), nullable=False, unique=True),
    #: The trigger as given (a :class:`TriggerIn` as JSON).
    Column("spec", Text, nullable=False),
    Column("secret", String(128), nullable=False),
    Column("created_ms", BigInteger, nullable=False),
)


class ScheduleNotFoundError(MimirError):
    """No schedule has this id."""


class ScheduleExistsError(MimirError):
    """A schedule of this name exists."""


class TriggerNotFoundError(MimirError):
    """No trigger has this id."""


class TriggerExistsError(MimirError):
    """A trigger of this name exists."""


class Misfire(StrEnum):
    """What a schedule does about ticks missed while no scheduler ran."""

    #: Forget them; continue with the next tick to come.
    skip = "skip"
    #: One run for all of them, then continue.
    run_once = "run_once"


class Overlap(StrEnum):
    """Whether a tick runs while the schedule's previous run has not ended."""

    allow = "allow"
    #: Skip the tick while the previous job is queued or running.
    skip = "skip"


def _now_ms() -> int:
    return int(datetime.now(UTC).timestamp() * 1000)


def _ms(moment: datetime) -> int:
    return round(moment.timestamp() * 1000)


def _from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


class PipelineTarget(PipelineRequest):
    """Which pipeline to run, with which context, and how to queue it (the enqueue
    route's pipeline fields; the queue options a repeated job keeps)."""

    priority: Priority = Priority.normal
    queue: str = Field(default="default", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    #: Seconds (or a Go duration, ``"90s"``) one attempt may run; unset: the queue's default.
    timeout: float | None = None
    max_retries: int | None = Field(default=None, ge=0, le=100)

    @field_validator("timeout", mode="before")
    @classmethod
    def _timeout(cls, value: Any) -> Any:
        if value is None:
            return None
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            raise ValueError(str(exc)) from None
        if seconds <= 0:
            raise ValueError("timeout must be more than 0")
        return seconds

    def job_options(self) -> dict[str, Any]:
        """The queue options set here, for :func:`mimir.core.jobs.pipeline_job`."""
        options: dict[str, Any] = {"priority": self.priority, "queue": self.queue}
        if self.timeout is not None:
            options["timeout"] = self.timeout
        if self.max_retries is not None:
            options["max_retries"] = self.max_retries
        return options


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"unknown time zone {name!r} (an IANA name, e.g. Europe/Berlin)") from None


def _aware(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


class ScheduleIn(PipelineTarget):
    """A schedule as the API takes it (``POST``/``PUT /api/v1/schedules``)."""

    name: str = Field(min_length=1, max_length=200)
    #: 5 fields (``min hour dom month dow``), or 6 with seconds first.
    cron: str | None = None
    #: A Go duration, at least 1 s: ``30s``, ``5m``, ``1h30m``.
    interval: str | None = None
    #: IANA time zone the cron expression reads its wall clock in.
    timezone: str = "UTC"
    #: No tick before this time (an interval's ticks count from it; default: creation).
    start_at: datetime | None = None
    #: No tick after this time; the schedule has then ended.
    end_at: datetime | None = None
    #: Up to this many seconds of delay added to each run (the same for every server).
    jitter: float = Field(default=0.0, ge=0, le=86400)
    misfire: Misfire = Misfire.skip
    overlap: Overlap = Overlap.allow

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is None:
            return None
        text = " ".join(value.split())
        fields = text.split(" ")
        if len(fields) not in (5, 6):
            raise ValueError(
                f"a cron expression has 5 fields (minute hour day month weekday) or 6 "
                f"(seconds first); {len(fields)} given"
            )
        try:
            croniter(text, datetime(2026, 1, 1), second_at_beginning=True).get_next(datetime)
        except Exception as exc:  # croniter's errors have no common public base
            raise ValueError(f"invalid cron expression {value!r}: {exc}") from None
        return text

    @field_validator("interval")
    @classmethod
    def _interval(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            raise ValueError(str(exc)) from None
        if seconds < 1:
            raise ValueError("the interval must be at least 1s")
        return value.strip() if isinstance(value, str) else value

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        _zone(value)
        return value

    @field_validator("start_at", "end_at")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        value = _aware(value)
        return None if value is None else value.astimezone(UTC)

    @model_validator(mode="after")
    def _one_rule(self) -> ScheduleIn:
        if (self.cron is None) == (self.interval is None):
            raise ValueError("give either cron or interval (exactly one of them)")
        if self.start_at and self.end_at and self.end_at <= self.start_at:
            raise ValueError("end_at must be after start_at")
        return self

    @property
    def interval_ms(self) -> int | None:
        return None if self.interval is None else int(parse_duration(self.interval) * 1000)


class TriggerIn(PipelineTarget):
    """A webhook trigger as the API takes it (``POST /api/v1/triggers``)."""

    name: str = Field(min_length=1, max_length=200)
    #: Deliveries accepted per minute; more answer 429 with ``Retry-After``.
    rate_limit: int = Field(default=60, ge=1, le=100_000)


# -- fire times ----------------------------------------------------------------------------


def _hour_is_wildcard(cron: str) -> bool:
    fields = cron.split(" ")
    hour = fields[1] if len(fields) == 5 else fields[2]
    return hour == "*"


def _wall_instants(naive: datetime, zone: ZoneInfo, every_hour: bool) -> list[datetime]:
    """The UTC instants a wall-clock time of ``zone`` stands for, as a schedule fires it."""
    first = naive.replace(tzinfo=zone, fold=0)
    second = naive.replace(tzinfo=zone, fold=1)
    if first.utcoffset() == second.utcoffset():
        return [first.astimezone(UTC)]
    # The two folds differ: the time is either missing (a gap) or repeated (an overlap).
    exists = first.astimezone(UTC).astimezone(zone).replace(tzinfo=None) == naive
    if not exists:  # spring forward: fire as far past the change as the time was meant
        return [] if every_hour else [first.astimezone(UTC)]
    if every_hour:  # repeated hour: both, for a schedule that fires every hour
        return [first.astimezone(UTC), second.astimezone(UTC)]
    return [first.astimezone(UTC)]


def _cron_after(spec: ScheduleIn, after: datetime) -> datetime | None:
    assert spec.cron is not None
    zone = _zone(spec.timezone)
    every_hour = _hour_is_wildcard(spec.cron)
    # Walk the wall clock from ``after`` and take the earliest instant after it. Near a
    # DST change the instants of neighbouring wall times come out of order (a repeated
    # hour's second fold, a missing time moved past the change): start a few hours back
    # and look a few hours on.
    start = after.astimezone(zone).replace(tzinfo=None)
    if (after - timedelta(hours=3)).astimezone(zone).utcoffset() != (
        after + timedelta(hours=3)
    ).astimezone(zone).utcoffset():
        start -= timedelta(hours=3)
    itr = croniter(spec.cron, start, second_at_beginning=True)
    best: datetime | None = None
    horizon: datetime | None = None
    for _ in range(200_000):
        naive = itr.get_next(datetime)
        if horizon is not None and naive > horizon:
            break
        for instant in _wall_instants(naive, zone, every_hour):
            if instant > after and (best is None or instant < best):
                best = instant
        if best is not None and horizon is None:
            # No offset change within a few hours of ``best``: nothing later can be earlier.
            local_best = best.astimezone(zone)
            before = (best - timedelta(hours=3)).astimezone(zone).utcoffset()
            later = (best + timedelta(hours=3)).astimezone(zone).utcoffset()
            if before == later == local_best.utcoffset():
                return best
            horizon = local_best.replace(tzinfo=None) + timedelta(hours=3)
    return best


def next_fire(
    spec: ScheduleIn, after: datetime, created: datetime | None = None
) -> datetime | None:
    """The first fire time of ``spec`` strictly after ``after`` (aware, UTC), or ``None``
    when the schedule ends first. ``created`` anchors an interval without ``start_at``."""
    after = _aware(after) or after
    start = spec.start_at
    if start is not None and after < start:
        after = start - timedelta(microseconds=1)
    interval_ms = spec.interval_ms
    if interval_ms is not None:
        anchor = start or _aware(created) or after
        anchor_ms, after_ms = _ms(anchor), _ms(after)
        if after < anchor:
            fire_ms = anchor_ms
        else:
            fire_ms = anchor_ms + ((after_ms - anchor_ms) // interval_ms + 1) * interval_ms
        fire: datetime | None = _from_ms(fire_ms)
    else:
        fire = _cron_after(spec, after)
    if fire is not None and spec.end_at is not None and fire > spec.end_at:
        return None
    return fire


def next_fires(
    spec: ScheduleIn, after: datetime, count: int = 5, created: datetime | None = None
) -> list[datetime]:
    """The next ``count`` fire times of ``spec`` after ``after``."""
    fires: list[datetime] = []
    moment: datetime | None = after
    while moment is not None and len(fires) < count:
        moment = next_fire(spec, moment, created)
        if moment is not None:
            fires.append(moment)
    return fires


def jitter_seconds(schedule_id: str, tick_ms: int, jitter: float) -> float:
    """The delay added to one tick's run: in ``[0, jitter]``, derived from the schedule and
    the tick, so every server that enqueues the tick picks the same one."""
    if jitter <= 0:
        return 0.0
    digest = hashlib.sha256(f"{schedule_id}:{tick_ms}".encode()).digest()
    return round(int.from_bytes(digest[:8], "big") / 2**64 * jitter, 3)


def tick_key(schedule_id: str, tick_ms: int) -> str:
    """The idempotency key of one tick's job: every server enqueues the same tick once."""
    return f"schedule:{schedule_id}:{tick_ms}"


def hook_delivery_key(prefix: str, trigger_id: str, delivery: str) -> str:
    """Redis key remembering a webhook delivery for 24 h (its value: the job id)."""
    return f"{prefix}hook:delivery:{trigger_id}:{delivery}"


def hook_rate_key(prefix: str, trigger_id: str, window: int) -> str:
    """Redis counter of one trigger's deliveries in one minute (``window``: Unix minute)."""
    return f"{prefix}hook:rate:{trigger_id}:{window}"


def new_secret() -> str:
    """A trigger's secret: 32 random bytes, URL-safe."""
    return secrets.token_urlsafe(32)


# -- storage -------------------------------------------------------------------------------


class ScheduleRow(BaseModel):
    """A stored schedule and its state."""

    id: str
    spec: ScheduleIn
    paused: bool
    next_tick_ms: int | None
    last_tick_ms: int | None
    last_job_id: str | None
    last_error: str | None
    version: int
    created_ms: int
    updated_ms: int

    @property
    def state(self) -> Literal["active", "paused", "ended"]:
        if self.paused:
            return "paused"
        return "ended" if self.next_tick_ms is None else "active"

    @property
    def created(self) -> datetime:
        return _from_ms(self.created_ms)


class TriggerRow(BaseModel):
    """A stored trigger (its secret included: never answer it but once, at creation)."""

    id: str
    spec: TriggerIn
    secret: str
    created_ms: int


def _schedule(row: Any) -> ScheduleRow:
    return ScheduleRow(
        id=row.id,
        spec=ScheduleIn.model_validate_json(row.spec),
        paused=bool(row.paused),
        next_tick_ms=row.next_tick_ms,
        last_tick_ms=row.last_tick_ms,
        last_job_id=row.last_job_id,
        last_error=row.last_error,
        version=row.version,
        created_ms=row.created_ms,
        updated_ms=row.updated_ms,
    )


def _spec_json(spec: BaseModel) -> str:
    return spec.model_dump_json(exclude_none=True)


@contextmanager
def _named(error: type[MimirError], what: str, name: str) -> Iterator[None]:
    """Turn the unique name's refusal into ``error`` ("a schedule named 'x' exists")."""
    try:
        yield
    except IntegrityError:
        raise error(f"a {what} named {name!r} exists") from None


class ScheduleStore:
    """The ``schedules`` table (synchronous; async callers use ``asyncio.to_thread``)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def _first_tick(self, spec: ScheduleIn, now_ms: int, created_ms: int) -> int | None:
        fire = next_fire(spec, _from_ms(now_ms), _from_ms(created_ms))
        return None if fire is None else _ms(fire)

    def create(self, spec: ScheduleIn) -> ScheduleRow:
        now = _now_ms()
        schedule_id = uuid.uuid4().hex
        values = {
            "id": schedule_id,
            "name": spec.name,
            "spec": _spec_json(spec),
            "paused": False,
            "next_tick_ms": self._first_tick(spec, now, now),
            "version": 0,
            "created_ms": now,
            "updated_ms": now,
        }
        with _named(ScheduleExistsError, "schedule", spec.name), self.engine.begin() as connection:
            connection.execute(insert(schedules).values(**values))
        return self.get(schedule_id)

    def get(self, schedule_id: str) -> ScheduleRow:
        row = row_by_id(self.engine, schedules, schedule_id)
        if row is None:
            raise ScheduleNotFoundError(f"no schedule {schedule_id!r}")
        return _schedule(row)

    def find(self, id_or_name: str) -> ScheduleRow:
        """By id, else by name."""
        with self.engine.connect() as connection:
            row = connection.execute(
                select(schedules).where(
                    (schedules.c.id == id_or_name) | (schedules.c.name == id_or_name)
                )
            ).first()
        if row is None:
            raise ScheduleNotFoundError(f"no schedule {id_or_name!r}")
        return _schedule(row)

    def list(self) -> builtins.list[ScheduleRow]:
        with self.engine.connect() as connection:
            rows = connection.execute(select(schedules).order_by(schedules.c.name)).all()
        return [_schedule(row) for row in rows]

    def replace(self, schedule_id: str, spec: ScheduleIn) -> ScheduleRow:
        """New definition; the next tick is computed again from now."""
        current = self.get(schedule_id)
        now = _now_ms()
        with _named(ScheduleExistsError, "schedule", spec.name), self.engine.begin() as connection:
            done = connection.execute(
                update(schedules)
                .where(schedules.c.id == schedule_id)
                .values(
                    name=spec.name,
                    spec=_spec_json(spec),
                    next_tick_ms=self._first_tick(spec, now, current.created_ms),
                    last_error=None,
                    version=schedules.c.version + 1,
                    updated_ms=now,
                )
            ).rowcount
        if not done:
            raise ScheduleNotFoundError(f"no schedule {schedule_id!r}")
        return self.get(schedule_id)

    def set_paused(self, schedule_id: str, paused: bool) -> ScheduleRow:
        """Pause, or resume (the next tick then counts from now: no catching up)."""
        current = self.get(schedule_id)
        now = _now_ms()
        values: dict[str, Any] = {
            "paused": paused,
            "version": schedules.c.version + 1,
            "updated_ms": now,
        }
        if not paused and current.paused:
            values["next_tick_ms"] = self._first_tick(current.spec, now, current.created_ms)
        with self.engine.begin() as connection:
            connection.execute(
                update(schedules).where(schedules.c.id == schedule_id).values(**values)
            )
        return self.get(schedule_id)

    def delete(self, schedule_id: str) -> None:
        if not delete_by_id(self.engine, schedules, schedule_id):
            raise ScheduleNotFoundError(f"no schedule {schedule_id!r}")

    def due(self, now_ms: int, limit: int = 500) -> builtins.list[ScheduleRow]:
        """Active schedules whose next tick is at or before ``now_ms``, oldest first."""
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(schedules)
                .where(
                    schedules.c.paused.is_(False),
                    schedules.c.next_tick_ms.is_not(None),
                    schedules.c.next_tick_ms <= now_ms,
                )
                .order_by(schedules.c.next_tick_ms)
                .limit(limit)
            ).all()
        return [_schedule(row) for row in rows]

    def next_due_ms(self) -> int | None:
        """The earliest next tick of any active schedule."""
        from sqlalchemy import func

        with self.engine.connect() as connection:
            value = connection.execute(
                select(func.min(schedules.c.next_tick_ms)).where(
                    schedules.c.paused.is_(False), schedules.c.next_tick_ms.is_not(None)
                )
            ).scalar()
        return None if value is None else int(value)

    def advance(
        self,
        row: ScheduleRow,
        next_tick_ms: int | None,
        *,
        last_tick_ms: int | None,
        last_job_id: str | None,
        last_error: str | None,
    ) -> bool:
        """Move the schedule past the ticks just handled, if no one did so (nor changed
        the schedule) since ``row`` was read; True when this call did."""
        values: dict[str, Any] = {"next_tick_ms": next_tick_ms, "last_error": last_error}
        if last_tick_ms is not None:
            values["last_tick_ms"] = last_tick_ms
        if last_job_id is not None:
            values["last_job_id"] = last_job_id
        with self.engine.begin() as connection:
            done = connection.execute(
                update(schedules)
                .where(
                    schedules.c.id == row.id,
                    schedules.c.version == row.version,
                    schedules.c.next_tick_ms == row.next_tick_ms,
                )
                .values(**values)
            ).rowcount
        return bool(done)

    def rewind(self, schedule_id: str, tick_ms: int) -> None:
        """Fire ``tick_ms`` again (its job was lost with a restore): the scheduler enqueues it
        with the same idempotency key, under the schedule's misfire policy."""
        with self.engine.begin() as connection:
            connection.execute(
                update(schedules)
                .where(schedules.c.id == schedule_id)
                .values(next_tick_ms=tick_ms, version=schedules.c.version + 1)
            )

    def record_job(self, schedule_id: str, job_id: str, tick_ms: int) -> None:
        """A run-now's job becomes the schedule's last job (for the overlap policy)."""
        with self.engine.begin() as connection:
            connection.execute(
                update(schedules)
                .where(schedules.c.id == schedule_id)
                .values(last_job_id=job_id, last_tick_ms=tick_ms)
            )


#: What a backup taken without secrets keeps in place of a trigger's secret; such a trigger
#: authenticates nothing until :meth:`TriggerStore.rotate` gives it a new one.
REDACTED_SECRET = "!redacted"


def _trigger(row: Any) -> TriggerRow:
    return TriggerRow(
        id=row.id,
        spec=TriggerIn.model_validate_json(row.spec),
        secret=row.secret,
        created_ms=row.created_ms,
    )


class TriggerStore:
    """The ``triggers`` table (synchronous)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def create(self, spec: TriggerIn) -> TriggerRow:
        trigger_id = uuid.uuid4().hex
        with _named(TriggerExistsError, "trigger", spec.name), self.engine.begin() as connection:
            connection.execute(
                insert(triggers).values(
                    id=trigger_id,
                    name=spec.name,
                    spec=_spec_json(spec),
                    secret=new_secret(),
                    created_ms=_now_ms(),
                )
            )
        return self.get(trigger_id)

    def get(self, trigger_id: str) -> TriggerRow:
        row = row_by_id(self.engine, triggers, trigger_id)
        if row is None:
            raise TriggerNotFoundError(f"no trigger {trigger_id!r}")
        return _trigger(row)

    def list(self) -> builtins.list[TriggerRow]:
        with self.engine.connect() as connection:
            rows = connection.execute(select(triggers).order_by(triggers.c.name)).all()
        return [_trigger(row) for row in rows]

    def delete(self, trigger_id: str) -> None:
        if not delete_by_id(self.engine, triggers, trigger_id):
            raise TriggerNotFoundError(f"no trigger {trigger_id!r}")

    def rotate(self, trigger_id: str) -> TriggerRow:
        """A new secret (the old one stops working at once)."""
        with self.engine.begin() as connection:
            done = connection.execute(
                update(triggers).where(triggers.c.id == trigger_id).values(secret=new_secret())
            ).rowcount
        if not done:
            raise TriggerNotFoundError(f"no trigger {trigger_id!r}")
        return self.get(trigger_id)

    def redacted(self) -> builtins.list[TriggerRow]:
        """Triggers restored from a backup without secrets: they need :meth:`rotate`."""
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(triggers).where(triggers.c.secret == REDACTED_SECRET)
            ).all()
        return [_trigger(row) for row in rows]
