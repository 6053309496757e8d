"""The run store's shapes: what a run, its steps, log lines and artifacts look like to
the API, the CLI and the console (JSON-friendly; every time an aware UTC datetime).

:class:`RunIn` is what :meth:`mimir.core.runstore.runs.RunStore.upsert` takes (a
:class:`RunRecord` plus its log lines); :func:`mimir.core.runstore.runs.run_from_outcome`
builds one from an entry of the queue's outcome stream.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, Field

__all__ = [
    "ArtifactRecord",
    "GroupBy",
    "LogLine",
    "RunFilter",
    "RunIn",
    "RunRecord",
    "RunSummary",
    "StatsRow",
    "StepRecord",
    "iso",
]

#: What :meth:`RunStore.stats` groups by.
GroupBy = Literal["pipeline", "status", "hour"]


def iso(moment: datetime) -> str:
    """ISO 8601 UTC to the millisecond with a ``Z`` (the queue's form of a moment)."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _aware(value: Any) -> Any:
    """A naive datetime read as UTC; an aware one converted to UTC."""
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return value


#: A datetime kept as aware UTC (a naive one is read as UTC).
UTCDateTime = Annotated[datetime, AfterValidator(_aware)]


class _Model(BaseModel):
    """Times are aware UTC datetimes in Python (ISO 8601 with ``Z`` in JSON)."""


class StepRecord(_Model):
    """One step of a run, as the worker reported it."""

    index: int
    name: str
    plugin: str | None = None
    #: ``succeeded``, ``failed`` or ``skipped``.
    status: str
    duration_ms: float | None = None
    error: str | None = None
    started_at: UTCDateTime | None = None


class ArtifactRecord(_Model):
    """A file a run wrote: ``name`` is its path relative to the data directory."""

    name: str
    size: int = 0
    content_type: str = "application/octet-stream"
    sha256: str | None = None
    step: str | None = None


class LogLine(_Model):
    """One log line of a run (``step`` is ``None`` for the engine's own lines)."""

    t: UTCDateTime
    level: str = "INFO"
    step: str | None = None
    msg: str = ""


class RunSummary(_Model):
    """A run as a list shows it."""

    job_id: str
    pipeline: str | None = None
    type: str = "pipeline"
    #: ``succeeded``, ``failed``, ``cancelled`` or ``dead``.
    status: str
    queue: str = "default"
    priority: str = "normal"
    attempts: int = 0
    worker_id: str | None = None
    enqueued_at: UTCDateTime | None = None
    started_at: UTCDateTime | None = None
    finished_at: UTCDateTime
    #: ``finished_at - started_at`` (``None`` for a run that never started).
    duration_ms: float | None = None
    error: str | None = None
    #: ``schedule`` or ``trigger`` when one started the run (``None``: the API or the CLI).
    origin_kind: str | None = None
    origin_id: str | None = None


class RunRecord(RunSummary):
    """A run with everything the store keeps about it except its log lines."""

    #: sha256 of the pipeline definition as canonical JSON (sorted keys, no spaces).
    definition_hash: str | None = None
    max_retries: int = 0
    timeout: float | None = None
    context: dict[str, Any] | None = None
    #: How it was run: priority, queue, timeout, max_retries, idempotency_key, origin.
    options: dict[str, Any] = Field(default_factory=dict)
    result: Any = None
    definition: dict[str, Any] | None = None
    steps: list[StepRecord] = Field(default_factory=list)
    artifacts: list[ArtifactRecord] = Field(default_factory=list)
    logs_truncated: bool = False


class RunIn(RunRecord):
    """What :meth:`RunStore.upsert` stores: a run and its log lines."""

    logs: list[LogLine] = Field(default_factory=list)


class RunFilter(_Model):
    """Which runs to list, export or count; every field optional (``None``: any)."""

    pipeline: str | None = None
    status: str | None = None
    queue: str | None = None
    #: Finished at or after this moment.
    since: UTCDateTime | None = None
    #: Finished before this moment.
    until: UTCDateTime | None = None
    #: Text searched (case-insensitively) in the error and the pipeline name.
    q: str | None = None
    #: The schedule or trigger that started the run.
    origin_id: str | None = None


class StatsRow(_Model):
    """Figures of one group of runs (:meth:`RunStore.stats`)."""

    #: The pipeline name (``""`` for runs without one), the status, or the hour
    #: (``2026-11-30T19:00:00Z``).
    key: str
    count: int
    succeeded: int
    #: ``failed`` and ``dead`` runs.
    failed: int
    #: ``failed / count`` (cancelled runs count in ``count`` only).
    failure_rate: float
    #: Median and 95th percentile of the duration of the runs that started.
    p50_ms: float | None = None
    p95_ms: float | None = None
