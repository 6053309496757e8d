"""The job record and the other shapes the queue hands across process boundaries.

A job record lives in Redis as a hash of plain strings (numbers as text, timestamps
as ISO 8601 UTC, ``progress``/``result`` as JSON); :func:`record_from_hash` and
:func:`record_to_hash` translate between that and :class:`JobRecord`.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

__all__ = [
    "FINAL_STATUSES",
    "DeadLetterEntry",
    "JobRecord",
    "JobStatus",
    "Priority",
    "Progress",
    "QueueStatus",
    "WaitResult",
    "WorkerInfo",
    "record_from_hash",
    "record_to_hash",
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
    #: Grows by one with every change of the record (each queue script that changes it);
    #: the ``job`` event of that change carries the same number, so a reader that merges
    #: records and events keeps the newest and drops what arrives late.
    version: int = 0

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


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    """ISO 8601 UTC with a ``Z``, as stored in Redis."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


_JSON_FIELDS = ("progress", "result")
_RECORD_FIELDS = frozenset(JobRecord.model_fields)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def record_from_hash(raw: dict[Any, Any]) -> JobRecord:
    """A :class:`JobRecord` from a job hash (``str`` or ``bytes`` keys and values)."""
    data: dict[str, Any] = {}
    for key, value in raw.items():
        name = _text(key)
        if name not in _RECORD_FIELDS:
            continue
        text = _text(value)
        if name in _JSON_FIELDS:
            data[name] = json.loads(text) if text else None
        elif name == "cancel_requested":
            data[name] = text == "1"
        elif text != "":
            data[name] = text
    return JobRecord.model_validate(data)


def record_to_hash(record: JobRecord) -> dict[str, str]:
    """The hash fields of ``record`` (``None`` fields left out)."""
    out: dict[str, str] = {}
    for name, value in record.model_dump(mode="json", exclude_none=True).items():
        if name in _JSON_FIELDS:
            out[name] = json.dumps(value, separators=(",", ":"))
        elif name == "cancel_requested":
            if value:
                out[name] = "1"
        else:
            out[name] = str(value)
    return out
