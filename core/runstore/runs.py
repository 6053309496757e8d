"""Runs: every job that reached a final state, with its steps, log lines and artifacts.

Four tables on :data:`~mimir.core.runstore.db.metadata` (created by migration
``0001_runs``): ``runs`` (one row per job id), ``run_steps``, ``run_logs`` (one row per
run: its log lines as JSON lines, and whether they were cut) and ``run_artifacts``.

:class:`RunStore` is synchronous and thread-safe (every method takes a connection from the
engine's pool for its own short transaction); the server calls it through
``asyncio.to_thread``. Lists are newest first with keyset pagination on
``(finished_at, job_id)``: every filter the API offers has an index that gives the rows in
that order, so a first page reads about ``limit`` index entries whatever the table's size
(the text search ``q`` alone walks the time index until it has a page).
"""

from __future__ import annotations

import base64
import builtins
import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Engine,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    TypeDecorator,
    and_,
    bindparam,
    delete,
    func,
    or_,
    select,
    tuple_,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, RowMapping
from sqlalchemy.exc import OperationalError
from sqlalchemy.sql import Select
from sqlalchemy.sql.elements import ColumnElement

from mimir.core.runstore.db import metadata
from mimir.core.runstore.models import (
    ArtifactRecord,
    GroupBy,
    LogLine,
    RunFilter,
    RunIn,
    RunRecord,
    RunSummary,
    StatsRow,
    StepRecord,
)

__all__ = [
    "FINAL_STATUSES",
    "InvalidCursorError",
    "RunIn",
    "RunStore",
    "UTCDateTime",
    "definition_hash",
    "run_artifacts",
    "run_from_outcome",
    "run_logs",
    "run_steps",
    "runs",
]

logger = logging.getLogger(__name__)
_T = TypeVar("_T")
_R = TypeVar("_R", bound=BaseModel)

#: The statuses a run can have (a job's final statuses).
FINAL_STATUSES = ("succeeded", "failed", "cancelled", "dead")
#: Statuses counted as failures by :meth:`RunStore.stats`.
_FAILED = frozenset({"failed", "dead"})


class UTCDateTime(TypeDecorator[datetime]):
    """A moment stored in UTC and read back aware: ``timestamptz`` on PostgreSQL; on
    SQLite naive UTC text (``2026-11-30 19:00:00.000000``, which sorts as time does)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


runs = Table(
    "runs",
    metadata,
    Column("job_id", String, primary_key=True),
    Column("pipeline", String),
    Column("type", String, nullable=False),
    Column("status", String, nullable=False),
    Column("queue", String, nullable=False),
    Column("priority", String, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("max_retries", Integer, nullable=False),
    Column("timeout", Float),
    Column("worker_id", String),
    Column("enqueued_at", UTCDateTime),
    Column("started_at", UTCDateTime),
    Column("finished_at", UTCDateTime, nullable=False),
    Column("duration_ms", Float),
    Column("error", Text),
    Column("origin_kind", String),
    Column("origin_id", String),
    Column("definition_hash", String),
    # JSON texts
    Column("context", Text),
    Column("options", Text),
    Column("result", Text),
    Column("definition", Text),
    # Newest first, with or without one filter: each index gives the rows in list order.
    Index("ix_runs_finished", "finished_at", "job_id"),
    Index("ix_runs_pipeline_finished", "pipeline", "finished_at", "job_id"),
    Index("ix_runs_status_finished", "status", "finished_at", "job_id"),
    Index("ix_runs_pipeline_status_finished", "pipeline", "status", "finished_at", "job_id"),
    Index("ix_runs_queue_finished", "queue", "finished_at", "job_id"),
    Index("ix_runs_origin_finished", "origin_id", "finished_at", "job_id"),
)

run_steps = Table(
    "run_steps",
    metadata,
    Column("job_id", String, ForeignKey("runs.job_id", ondelete="CASCADE"), primary_key=True),
    Column("step_index", Integer, primary_key=True),
    Column("name", String, nullable=False),
    Column("plugin", String),
    Column("status", String, nullable=False),
    Column("duration_ms", Float),
    Column("error", Text),
    Column("started_at", UTCDateTime),
)

run_logs = Table(
    "run_logs",
    metadata,
    Column("job_id", String, ForeignKey("runs.job_id", ondelete="CASCADE"), primary_key=True),
    # One JSON object per line: {"t", "level", "step", "msg"}.
    Column("lines", Text, nullable=False),
    Column("truncated", Boolean, nullable=False),
)

run_artifacts = Table(
    "run_artifacts",
    metadata,
    Column("job_id", String, ForeignKey("runs.job_id", ondelete="CASCADE"), primary_key=True),
    Column("name", String, primary_key=True),
    Column("size", BigInteger, nullable=False),
    Column("content_type", String, nullable=False),
    Column("sha256", String),
    Column("step", String),
)

_SUMMARY_COLUMNS = [runs.c[name] for name in RunSummary.model_fields]
_RECORD_JSON = ("context", "options", "result", "definition")


class InvalidCursorError(ValueError):
    """A pagination cursor this store did not hand out."""


# --- from the outcome stream -------------------------------------------------------------


def definition_hash(definition: Any) -> str:
    """sha256 (hex) of ``definition`` as canonical JSON: sorted keys, no spaces, UTF-8."""
    text = json.dumps(
        definition, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
    )
    return hashlib.sha256(text.encode()).hexdigest()


def _text(value: Any) -> str | None:
    if value is None or value == "":
        return None
    return value if isinstance(value, str) else str(value)


def _time(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _json(value: Any) -> Any:
    """A ``json`` record field: decoded from its text (text that is not JSON stays text)."""
    if not isinstance(value, str):
        return value
    if value == "":
        return None
    try:
        return json.loads(value)
    except ValueError:
        return value


def _int(value: Any, default: int = 0) -> int:
    try:
        return int(value) if value not in (None, "") else default
    except (TypeError, ValueError):
        return default


def _float(value: Any) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _valid(model: Any, items: Any, what: str, job_id: str) -> builtins.list[Any]:
    out = []
    bad: ValidationError | None = None
    left_out = 0
    for item in items if isinstance(items, list) else []:
        try:
            out.append(model.model_validate(item))
        except ValidationError as exc:
            bad, left_out = exc, left_out + 1
    if bad is not None:
        logger.warning(
            "run %s: %d %s(s) the worker reported left out, e.g.: %s", job_id, left_out, what, bad
        )
    return out


def run_from_outcome(
    record: Mapping[str, Any], detail: Mapping[str, Any] | None, payload: Mapping[str, Any] | None
) -> RunIn:
    """The run of an outcome stream entry: ``record`` is the job's record fields as the
    job hash holds them (text, encoded as :mod:`mimir.core.queue.protocol` declares; values
    already decoded are taken as they are), ``detail`` the worker's steps, logs and
    artifacts, ``payload`` the job's payload (``{"pipeline": {definition}, "context":
    {...}}`` for a pipeline job; ``None`` once it has expired)."""
    job_id = str(record["job_id"])
    detail = detail or {}
    payload = payload or {}
    started_at = _time(record.get("started_at"))
    finished_at = (
        _time(record.get("finished_at"))
        or _time(record.get("started_at"))
        or _time(record.get("enqueued_at"))
        or datetime.now(UTC)
    )
    duration_ms = (
        (finished_at - started_at).total_seconds() * 1000.0 if started_at is not None else None
    )
    origin = _json(record.get("origin"))
    if not isinstance(origin, dict):
        origin = None
    definition = payload.get("pipeline")
    if not isinstance(definition, dict):
        definition = None
    context = payload.get("context")
    if not isinstance(context, dict):
        context = None
    pipeline = _text(record.get("pipeline"))
    if pipeline is None and definition is not None:
        pipeline = _text(definition.get("name"))
    timeout = _float(record.get("timeout"))
    max_retries = _int(record.get("max_retries"))
    priority = _text(record.get("priority")) or "normal"
    queue = _text(record.get("queue")) or "default"
    options: dict[str, Any] = {
        "priority": priority,
        "queue": queue,
        "timeout": timeout,
        "max_retries": max_retries,
    }
    for name in ("idempotency_key", "scheduled_for", "traceparent"):
        if _text(record.get(name)) is not None:
            options[name] = _text(record.get(name))
    if origin is not None:
        options["origin"] = origin
    steps = _valid(StepRecord, detail.get("steps"), "step", job_id)
    return RunIn(
        job_id=job_id,
        pipeline=pipeline,
        type=_text(record.get("type")) or "pipeline",
        status=_text(record.get("status")) or "failed",
        queue=queue,
        priority=priority,
        attempts=_int(record.get("attempts")),
        worker_id=_text(record.get("worker_id")),
        enqueued_at=_time(record.get("enqueued_at")),
        started_at=started_at,
        finished_at=finished_at,
        duration_ms=duration_ms,
        error=_text(record.get("error")),
        origin_kind=_text(origin.get("kind")) if origin else None,
        origin_id=_text(origin.get("id")) if origin else None,
        definition_hash=definition_hash(definition) if definition is not None else None,
        max_retries=max_retries,
        timeout=timeout,
        context=context,
        options=options,
        result=_json(record.get("result")),
        definition=definition,
        steps=sorted(steps, key=lambda step: step.index),
        artifacts=_valid(ArtifactRecord, detail.get("artifacts"), "artifact", job_id),
        logs=_valid(LogLine, detail.get("logs"), "log line", job_id),
        logs_truncated=bool(detail.get("logs_truncated")),
    )


# --- rows ------------------------------------------------------------------------------


def _dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"), default=str)


def _run_row(run: RunIn) -> dict[str, Any]:
    row = {name: getattr(run, name) for name in RunSummary.model_fields}
    row["definition_hash"] = run.definition_hash
    row["max_retries"] = run.max_retries
    row["timeout"] = run.timeout
    for name in _RECORD_JSON:
        row[name] = _dumps(getattr(run, name))
    return row


def _no_nul(rows: builtins.list[dict[str, Any]]) -> builtins.list[dict[str, Any]]:
    """``rows`` with NUL characters in texts replaced (PostgreSQL refuses them in text)."""
    for row in rows:
        for name, value in row.items():
            if isinstance(value, str) and "\x00" in value:
                row[name] = value.replace("\x00", "\ufffd")
    return rows


def _log_text(lines: Iterable[LogLine]) -> str:
    return "\n".join(line.model_dump_json() for line in lines)


def _encode_cursor(finished_at: datetime, job_id: str) -> str:
    text = json.dumps([finished_at.astimezone(UTC).isoformat(), job_id], separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        moment, job_id = json.loads(raw)
        finished_at = _time(moment)
        if finished_at is None or not isinstance(job_id, str):
            raise ValueError(cursor)
        return finished_at, job_id
    except (ValueError, TypeError) as exc:
        raise InvalidCursorError(f"invalid cursor {cursor!r}") from exc


def _percentile(ordered: Sequence[float], fraction: float) -> float | None:
    """Linear interpolation between the closest ranks (numpy's default)."""
    if not ordered:
        return None
    rank = (len(ordered) - 1) * fraction
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _conditions(
    filter: RunFilter | None, dialect: str = "postgresql"
) -> builtins.list[ColumnElement[bool]]:
    conds: builtins.list[ColumnElement[bool]] = []
    if filter is None:
        return conds
    if filter.pipeline is not None:
        conds.append(runs.c.pipeline == filter.pipeline)
    if filter.status is not None:
        conds.append(runs.c.status == filter.status)
    if filter.queue is not None:
        conds.append(runs.c.queue == filter.queue)
    if filter.origin_id is not None:
        conds.append(runs.c.origin_id == filter.origin_id)
    if filter.since is not None:
        conds.append(runs.c.finished_at >= filter.since)
    if filter.until is not None:
        conds.append(runs.c.finished_at < filter.until)
    if filter.q:
        pattern = f"%{_escape_like(filter.q)}%"
        if dialect == "sqlite":
            # SQLite's LIKE ignores ASCII case already (as its lower() does: ASCII only);
            # ilike's lower() on both sides costs a third of a scan.
            conds.append(
                or_(
                    runs.c.error.like(pattern, escape="\\"),
                    runs.c.pipeline.like(pattern, escape="\\"),
                )
            )
        else:
            conds.append(
                or_(
                    runs.c.error.ilike(pattern, escape="\\"),
                    runs.c.pipeline.ilike(pattern, escape="\\"),
                )
            )
    return conds


def _before(finished_at: datetime, job_id: str) -> ColumnElement[bool]:
    """Rows after the cursor in list order (older, or as old with a smaller id)."""
    return tuple_(runs.c.finished_at, runs.c.job_id) < tuple_(
        bindparam("cursor_finished_at", finished_at, type_=UTCDateTime),
        bindparam("cursor_job_id", job_id, type_=String),
    )


class RunStore:
    """The runs in the database behind ``engine`` (see the module's text)."""

    #: Rows per statement and transaction in :meth:`prune` and :meth:`export`.
    batch_size = 500

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._dialect = engine.dialect.name

    # -- writing ----------------------------------------------------------------------

    def _insert(self, table: Table) -> Any:
        if self._dialect == "postgresql":
            return postgresql.insert(table)
        if self._dialect == "sqlite":
            return sqlite.insert(table)
        raise NotImplementedError(f"the run store takes SQLite or PostgreSQL, not {self._dialect}")

    def upsert(self, runs: Sequence[RunIn]) -> int:
        """Store ``runs`` (one transaction); a run already stored is replaced, its
        steps, log lines and artifacts too (never duplicated). Answers how many runs were
        written. Safe with several servers on one database: rows are written in job id
        order (so two batches cannot deadlock) and the run's row lock serialises the
        replacement of its children; a deadlock or busy database is retried."""
        if not runs:
            return 0
        by_id = {run.job_id: run for run in runs}  # the last of one id wins
        ordered = [by_id[job_id] for job_id in sorted(by_id)]

        def write() -> int:
            with self.engine.begin() as connection:
                self._write(connection, ordered)
            return len(ordered)

        return self._retrying(write)

    @staticmethod
    def _retrying(call: Callable[..., _T], *args: Any) -> _T:
        """``call(*args)`` (one transaction), again after a deadlock, a serialisation
        failure or a busy SQLite database (a read that turned into a write after another
        writer committed is refused at once, whatever the busy timeout)."""
        for attempt in range(6):
            try:
                return call(*args)
            except OperationalError as exc:
                if attempt == 5:
                    raise
                logger.info("run store: retrying after %s", exc.orig)
                time.sleep(0.05 * 2**attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    def _write(self, connection: Connection, ordered: Sequence[RunIn]) -> None:
        ids = [run.job_id for run in ordered]
        stmt = self._insert(runs)
        stmt = stmt.on_conflict_do_update(
            index_elements=[runs.c.job_id],
            set_={c.name: stmt.excluded[c.name] for c in runs.columns if c.name != "job_id"},
        )
        connection.execute(stmt, _no_nul([_run_row(run) for run in ordered]))
        for table in (run_steps, run_logs, run_artifacts):
            connection.execute(delete(table).where(table.c.job_id.in_(ids)))
        steps = [
            {"job_id": run.job_id, "step_index": step.index, **step.model_dump(exclude={"index"})}
            for run in ordered
            for step in {step.index: step for step in run.steps}.values()
        ]
        if steps:
            connection.execute(run_steps.insert(), _no_nul(steps))
        logs = [
            {"job_id": run.job_id, "lines": _log_text(run.logs), "truncated": run.logs_truncated}
            for run in ordered
            if run.logs or run.logs_truncated
        ]
        if logs:
            connection.execute(run_logs.insert(), logs)
        artifacts = [
            {"job_id": run.job_id, **artifact.model_dump()}
            for run in ordered
            for artifact in {a.name: a for a in run.artifacts}.values()
        ]
        if artifacts:
            connection.execute(run_artifacts.insert(), _no_nul(artifacts))

    def prune(self, older_than: datetime | None, max_count: int = 0, *, pause: float = 0.0) -> int:
        """Delete the runs that finished before ``older_than`` and, when ``max_count`` > 0,
        all but the newest ``max_count``; in batches of :attr:`batch_size`, one short
        transaction each (``pause`` seconds between them leave room for other writers).
        Answers how many runs were deleted."""
        deleted = 0
        if older_than is not None:
            cond: ColumnElement[bool] = runs.c.finished_at < older_than
            deleted += self._delete_where(cond, pause)
        if max_count > 0:
            with self.engine.connect() as connection:
                edge = connection.execute(
                    select(runs.c.finished_at, runs.c.job_id)
                    .order_by(runs.c.finished_at.desc(), runs.c.job_id.desc())
                    .offset(max_count - 1)
                    .limit(1)
                ).first()
            if edge is not None:
                deleted += self._delete_where(_before(edge.finished_at, edge.job_id), pause)
        return deleted

    def _delete_where(self, cond: ColumnElement[bool], pause: float) -> int:
        deleted = 0
        while True:
            removed = self._retrying(self._delete_batch, cond)
            if not removed:
                return deleted
            deleted += removed
            if pause:
                time.sleep(pause)

    def _delete_batch(self, cond: ColumnElement[bool]) -> int:
        with self.engine.begin() as connection:
            # The runs' rows are locked first, as upsert locks them, and a run being
            # stored right now is left for the next prune (PostgreSQL; SQLite has one
            # writer at a time anyway).
            ids = (
                connection.execute(
                    select(runs.c.job_id)
                    .where(cond)
                    .order_by(runs.c.finished_at, runs.c.job_id)
                    .limit(self.batch_size)
                    .with_for_update(skip_locked=True)
                )
                .scalars()
                .all()
            )
            for table in (run_steps, run_logs, run_artifacts, runs):
                if ids:
                    connection.execute(delete(table).where(table.c.job_id.in_(ids)))
        return len(ids)

    # -- reading ----------------------------------------------------------------------

    def statuses(self, job_ids: Sequence[str]) -> dict[str, str]:
        """``{job_id: status}`` of the given jobs that have a stored run (500 ids a query)."""
        found: dict[str, str] = {}
        with self.engine.connect() as connection:
            for start in range(0, len(job_ids), 500):
                chunk = list(job_ids[start : start + 500])
                rows = connection.execute(
                    select(runs.c.job_id, runs.c.status).where(runs.c.job_id.in_(chunk))
                )
                found.update({row.job_id: row.status for row in rows})
        return found

    def get(self, job_id: str) -> RunRecord | None:
        """The run of ``job_id`` with its steps and artifacts (not its log lines)."""
        with self.engine.connect() as connection:
            row = connection.execute(select(runs).where(runs.c.job_id == job_id)).mappings().first()
            if row is None:
                return None
            step_records = [
                _record(StepRecord, s, index="step_index")
                for s in _children(connection, run_steps, job_id, run_steps.c.step_index)
            ]
            artifacts = self._artifacts(connection, job_id)
            truncated = connection.execute(
                select(run_logs.c.truncated).where(run_logs.c.job_id == job_id)
            ).scalar()
        data: dict[str, Any] = dict(row)
        for name in _RECORD_JSON:
            data[name] = json.loads(data[name]) if data[name] is not None else None
        if data["options"] is None:
            data["options"] = {}
        return RunRecord(
            **data, steps=step_records, artifacts=artifacts, logs_truncated=bool(truncated)
        )

    def logs(self, job_id: str) -> builtins.list[LogLine] | None:
        """The run's log lines in order (``None``: no such run)."""
        with self.engine.connect() as connection:
            text = connection.execute(
                select(run_logs.c.lines).where(run_logs.c.job_id == job_id)
            ).scalar()
            if text is None:
                return [] if self._exists(connection, job_id) else None
        return [LogLine.model_validate_json(line) for line in text.splitlines() if line]

    def artifacts(self, job_id: str) -> builtins.list[ArtifactRecord] | None:
        """The run's artifacts by name (``None``: no such run)."""
        with self.engine.connect() as connection:
            found = self._artifacts(connection, job_id)
            if not found and not self._exists(connection, job_id):
                return None
        return found

    @staticmethod
    def _artifacts(connection: Connection, job_id: str) -> builtins.list[ArtifactRecord]:
        rows = _children(connection, run_artifacts, job_id, run_artifacts.c.name)
        return [_record(ArtifactRecord, r) for r in rows]

    @staticmethod
    def _exists(connection: Connection, job_id: str) -> bool:
        found = connection.execute(select(runs.c.job_id).where(runs.c.job_id == job_id)).first()
        return found is not None

    def list(
        self, filter: RunFilter | None = None, limit: int = 50, cursor: str | None = None
    ) -> tuple[builtins.list[RunSummary], str | None]:
        """One page of runs, newest first (by ``finished_at``, then job id), and the cursor
        of the next page (``None`` on the last). Raises :class:`InvalidCursorError`."""
        limit = max(1, limit)
        stmt = self.list_query(filter, limit + 1, cursor)
        with self.engine.connect() as connection:
            rows = connection.execute(stmt).mappings().all()
        page = [_summary(row) for row in rows[:limit]]
        next_cursor = (
            _encode_cursor(page[-1].finished_at, page[-1].job_id) if len(rows) > limit else None
        )
        return page, next_cursor

    def list_query(
        self, filter: RunFilter | None = None, limit: int = 50, cursor: str | None = None
    ) -> Select[Any]:
        """The query of :meth:`list` (``limit`` rows from ``cursor`` on), e.g. to explain."""
        conds = _conditions(filter, self._dialect)
        if cursor:
            conds.append(_before(*_decode_cursor(cursor)))
        return (
            select(*_SUMMARY_COLUMNS)
            .where(and_(True, *conds))
            .order_by(runs.c.finished_at.desc(), runs.c.job_id.desc())
            .limit(limit)
        )

    def export(self, filter: RunFilter | None = None) -> Iterator[RunSummary]:
        """Every run ``filter`` selects, newest first, read :attr:`batch_size` at a time
        (one short query per batch: constant memory, no long read transaction)."""
        cursor: str | None = None
        while True:
            page, cursor = self.list(filter, self.batch_size, cursor)
            yield from page
            if cursor is None:
                return

    def count(self, filter: RunFilter | None = None) -> int:
        """How many runs are stored (that ``filter`` selects)."""
        conds = _conditions(filter, self._dialect)
        stmt = select(func.count()).select_from(runs).where(and_(True, *conds))
        with self.engine.connect() as connection:
            return int(connection.execute(stmt).scalar_one())

    def last_for_origin(self, origin_id: str, n: int = 5) -> builtins.list[RunSummary]:
        """The newest ``n`` runs the schedule or trigger ``origin_id`` started."""
        page, _ = self.list(RunFilter(origin_id=origin_id), limit=n)
        return page

    def stats(
        self, since: datetime | None = None, group_by: GroupBy = "pipeline"
    ) -> builtins.list[StatsRow]:
        """Counts, failure rate and duration percentiles of the runs that finished at or
        after ``since``, by pipeline, status or hour (UTC) of their end. Sorted by key
        (hours oldest first)."""
        if group_by not in ("pipeline", "status", "hour"):
            raise ValueError(f"group_by must be pipeline, status or hour, not {group_by!r}")
        key_column: ColumnElement[Any]
        if group_by == "pipeline":
            key_column = func.coalesce(runs.c.pipeline, "")
        elif group_by == "status":
            key_column = runs.c.status
        elif self._dialect == "sqlite":  # the stored text: 2026-11-30 19:00:00.000000
            key_column = func.substr(runs.c.finished_at, 1, 13, type_=String)
        else:
            key_column = func.to_char(
                func.timezone("UTC", runs.c.finished_at), "YYYY-MM-DD HH24", type_=String
            )
        # Three plain columns (no time parsed per row): 1,000,000 runs in seconds.
        stmt = select(key_column, runs.c.status, runs.c.duration_ms)
        if since is not None:
            stmt = stmt.where(runs.c.finished_at >= since)
        groups: dict[str, tuple[builtins.list[int], builtins.list[float]]] = {}
        with self.engine.connect() as connection:
            result = connection.execution_options(yield_per=5000).execute(stmt)
            for key, status, duration_ms in result:
                counts, durations = groups.get(key) or groups.setdefault(key, ([0, 0, 0], []))
                counts[0] += 1
                if status == "succeeded":
                    counts[1] += 1
                elif status in _FAILED:
                    counts[2] += 1
                if duration_ms is not None:
                    durations.append(duration_ms)
        if group_by == "hour":
            groups = {f"{key[:10]}T{key[11:13]}:00:00Z": value for key, value in groups.items()}
        out = []
        for key in sorted(groups):
            (count, succeeded, failed), durations = groups[key]
            durations.sort()
            out.append(
                StatsRow(
                    key=key,
                    count=count,
                    succeeded=succeeded,
                    failed=failed,
                    failure_rate=failed / count if count else 0.0,
                    p50_ms=_percentile(durations, 0.50),
                    p95_ms=_percentile(durations, 0.95),
                )
            )
        return out


def _children(
    connection: Connection, table: Table, job_id: str, order_by: ColumnElement[Any]
) -> Iterable[RowMapping]:
    """The rows of one run in a child table (its steps, its artifacts), in ``order_by``."""
    return connection.execute(
        select(table).where(table.c.job_id == job_id).order_by(order_by)
    ).mappings()


def _record(model: type[_R], row: RowMapping, **columns: str) -> _R:
    """``model`` from a child table's row: each field from the column of its name, or of
    the name ``columns`` gives it (``index="step_index"``)."""
    return model(**{name: row[columns.get(name, name)] for name in model.model_fields})


def _summary(row: RowMapping) -> RunSummary:
    return RunSummary.model_validate(dict(row))
