"""The job record and the other shapes the queue hands across process boundaries.

A job record lives in Redis as a hash of plain strings, each field encoded as declared
in :mod:`mimir.core.queue.protocol`; :func:`record_from_hash` reads it into a
:class:`JobRecord`. :class:`JobSpec` is what a producer enqueues; its options
(:class:`JobOptions`) are also the API's enqueue options.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field, computed_field, field_serializer

from mimir.core.queue.protocol import RECORD_FIELDS, decode_field
from mimir.core.telemetry import trace_id_of

__all__ = [
    "FINAL_STATUSES",
    "DeadLetterEntry",
    "JobOptions",
    "JobRecord",
    "JobSpec",
    "JobStatus",
    "PoolFigures",
    "Priority",
    "Progress",
    "QueueStatus",
    "WaitResult",
    "WorkerInfo",
    "record_from_hash",
    "utc_now",
]


class JobStatus(StrEnum):
    """Where a job is in its life."""

    #: Waiting in its priority stream for a worker.
    queued = "queued"
    #: Delayed: waits in the scheduled set (a delayed enqueue, or a retry after backoff).
    scheduled = "scheduled"
    #: A worker holds it (and renews its lease).
    running = "running"
    #: The handler returned; ``result`` holds what it returned.
    succeeded = "succeeded"
    #: The handler failed on its last allowed attempt; also in the dead-letter stream.
    failed = "failed"
    #: Cancelled before or while running.
    cancelled = "cancelled"
    #: Delivered more than ``max_retries + 1`` times without ending (it keeps killing or
    #: losing its workers); in the dead-letter stream.
    dead = "dead"


#: Statuses a job never leaves (short of a retry from the dead letter).
FINAL_STATUSES = frozenset(
    {JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled, JobStatus.dead}
)


class Priority(StrEnum):
    """Which stream a job waits in; higher priorities are always read first."""

    #: Read before anything else.
    high = "high"
    #: The default.
    normal = "normal"
    #: Read when nothing else waits, and now and then regardless (never starved).
    low = "low"


class Progress(BaseModel):
    """Step ``step`` (counting from 1) of ``total`` is done; ``name`` is its name."""

    step: int
    total: int
    name: str | None = None


class JobOptions(BaseModel):
    """How to run a job: the options a producer (and the API's enqueue body) may set."""

    priority: Priority = Priority.normal
    #: Worker pool; only workers started with this name in ``--queues`` take the job.
    queue: str = Field(default="default", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    #: Seconds one attempt may run before it is stopped (and counted as failed).
    timeout: float | None = Field(default=3600.0, gt=0)
    #: Retries after a failure (so at most ``max_retries + 1`` attempts / deliveries).
    max_retries: int = Field(default=2, ge=0, le=100)
    #: Seconds before the first retry; doubled each further retry, with jitter.
    retry_backoff: float = Field(default=1.0, ge=0)
    #: Seconds to wait before the job becomes available.
    delay: float = Field(default=0.0, ge=0)
    #: Enqueueing again with the same key (within the job TTL) returns the first job.
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=200)


class JobSpec(JobOptions):
    """What to enqueue: the payload for the job type's handler and how to run it."""

    #: Handler name (``mimir.core.jobs``): ``pipeline``, ``digital_twin`` …
    type: str = "pipeline"
    #: Handler input; for ``pipeline``: ``{"pipeline": {definition}, "context": {...}}``.
    payload: dict[str, Any] = Field(default_factory=dict)
    #: Display name (the pipeline's name).
    pipeline: str | None = None
    #: What started the job, kept on its record and its run: ``{"kind": "schedule", "id":
    #: SCHEDULE_ID, "tick": ISO}``, ``{"kind": "trigger", "id": TRIGGER_ID, "delivery":
    #: ID}``, or none (the API or the CLI).
    origin: dict[str, Any] | None = None


class JobRecord(BaseModel):
    """A job as the API and the CLI show it."""

    job_id: str
    type: str = "pipeline"
    status: JobStatus
    priority: Priority = Priority.normal
    queue: str = "default"
    attempts: int = 0
    max_retries: int = 2
    timeout: float | None = None
    worker_id: str | None = None
    pipeline: str | None = None
    enqueued_at: datetime
    scheduled_for: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    progress: Progress | None = None
    result: Any = None
    error: str | None = None
    idempotency_key: str | None = None
    cancel_requested: bool = False
    #: What started the job (see :attr:`JobSpec.origin`).
    origin: dict[str, Any] | None = None
    #: Grows by one with every change of the record (each queue script that changes it);
    #: the ``job`` event of that change carries the same number, so a reader that merges
    #: records and events keeps the newest and drops what arrives late.
    version: int = 0
    #: The W3C ``traceparent`` of the enqueue (``None`` when it was not traced): the
    #: worker's job span of every attempt continues that trace.
    traceparent: str | None = None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def trace_id(self) -> str | None:
        """The trace id (32 hex digits) of :attr:`traceparent`."""
        return trace_id_of(self.traceparent)

    @field_serializer("enqueued_at", "scheduled_for", "started_at", "finished_at")
    def _times(self, moment: datetime | None) -> str | None:
        return None if moment is None else iso(moment)

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES


class WaitResult(BaseModel):
    """What :meth:`JobQueue.wait` returns: the record, and whether the wait ran out."""

    job: JobRecord
    timed_out: bool


class DeadLetterEntry(BaseModel):
    """One entry of the dead-letter stream (the record may have expired since)."""

    entry_id: str
    job_id: str
    status: str
    error: str | None = None
    at: datetime | None = None
    job: JobRecord | None = None


class WorkerInfo(BaseModel):
    """A live worker, from its last heartbeat."""

    worker_id: str
    hostname: str = ""
    pid: int = 0
    queues: list[str] = Field(default_factory=list)
    concurrency: int = 0
    started_at: datetime | None = None
    last_heartbeat: datetime | None = None
    heartbeat_age_s: float = 0.0
    current_jobs: list[str] = Field(default_factory=list)
    processed: int = 0
    succeeded: int = 0
    failed: int = 0
    cpu_percent: float = 0.0
    memory_bytes: int = 0
    draining: bool = False
    #: The worker pool it belongs to (``mimir worker --pool``).
    pool: str = "default"
    #: The job types it runs (``mimir worker --job-types``); ``None``: all.
    job_types: list[str] | None = None


class PoolFigures(BaseModel):
    """One pool's load (:meth:`JobQueue.pool_figures`): what its autoscaler sizes it by."""

    #: Jobs waiting in the pool's queues (every priority), not yet delivered to a worker.
    queued: int = 0
    #: Jobs of the pool's queues delivered to a worker and not ended (running).
    running: int = 0
    #: Seconds the oldest waiting job has waited (``None``: nothing waits).
    oldest_age_s: float | None = None
    #: Live workers of the pool (by their heartbeats' ``pool``).
    workers: int = 0
    #: Of those, how many run at least one job.
    busy: int = 0
    #: Of those, how many are draining (stopping: they take no more jobs).
    draining: int = 0
    #: Jobs the pool's live workers have processed (the sum of their counters).
    processed: int = 0


class QueueStatus(BaseModel):
    """Queue-wide figures (``GET /api/v1/queue/status``)."""

    queue_length: int
    by_priority: dict[str, int]
    by_queue: dict[str, int] = Field(default_factory=dict)
    scheduled: int
    running: int
    dead: int
    workers: int
    completed_per_sec: float
    failed_per_sec: float
    totals: dict[str, int]
    #: Queues with jobs (waiting, or enqueued to) that neither a live worker nor a declared
    #: pool serves: their jobs wait until one does.
    unserved_queues: list[str] = Field(default_factory=list)


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    """ISO 8601 UTC to the millisecond with a ``Z``: as stored in Redis (the Lua scripts
    write the same form), in events and in API answers, so one moment has one text."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def record_from_hash(raw: dict[str, str]) -> JobRecord:
    """A :class:`JobRecord` from a job hash (fields as declared in the protocol; the
    hash's internal fields are left out)."""
    data: dict[str, Any] = {}
    for name, text in raw.items():
        if name in RECORD_FIELDS:
            value = decode_field(name, text)
            if value is not None:
                data[name] = value
    return JobRecord.model_validate(data)
