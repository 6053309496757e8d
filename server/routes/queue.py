"""The job queue over HTTP (the seed's calls, exactly, plus list, cancel and dead letter).

- ``POST /api/v1/queue/pipelines/enqueue`` — the execute body (``pipeline_file`` |
  ``pipeline_name`` | ``pipeline``, ``context``) plus ``priority``, ``timeout``,
  ``max_retries``, ``queue``, ``delay``, ``idempotency_key`` → ``202``;
- ``GET /api/v1/queue/jobs/{id}``, ``GET /api/v1/queue/jobs/{id}/wait?timeout=60s``;
- ``GET /api/v1/queue/status`` (with ``unserved_queues``: queues no live worker and no
  declared pool serves), ``GET /api/v1/queue/jobs?status=&queue=&offset=&limit=``;
- ``POST /api/v1/queue/jobs/{id}/cancel``;
- ``GET /api/v1/queue/dead-letter``, ``POST /api/v1/queue/dead-letter/{id}/retry``,
  ``DELETE /api/v1/queue/dead-letter/{id}``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request, status
from pydantic import BaseModel, field_validator
from sqlalchemy import Engine

from mimir.core.durations import parse_duration
from mimir.core.jobs import pipeline_job
from mimir.core.pipeline.requests import PipelineRequest, resolve_pipeline_request
from mimir.core.pools import ClusterFileError, pools_from_env
from mimir.core.queue import (
    DeadLetterEntry,
    JobNotFoundError,
    JobOptions,
    JobPage,
    JobQueue,
    JobRecord,
    JobStateError,
    JobStatus,
    QueueStatus,
)
from mimir.core.runstore.models import RunFilter, RunRecord, RunSummary
from mimir.core.runstore.runs import RunStore
from mimir.server.deps import LiveDep, RedisDep, RegistryDep, SettingsDep, StoreDep

__all__ = ["EnqueueAccepted", "EnqueueRequest", "QueueDep", "get_queue", "router"]

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1/queue", tags=["queue"])

#: Longest wait one ``/wait`` call may ask for.
MAX_WAIT = 3600.0
#: Newest jobs the list merges from Redis and the run store; a page beyond this many is
#: Redis's alone (the run history is paged through ``GET /api/v1/runs``).
MERGE_WINDOW = 5000
#: Seconds a count of stored runs serves the job list's ``total`` (a console polling the
#: list would otherwise count a million rows each time).
COUNT_TTL = 2.0
_COUNTS: dict[tuple[int, str | None, str | None], tuple[float, int]] = {}
#: Largest page offset (Redis counts in signed 64-bit integers; no queue gets near this).
MAX_OFFSET = 10**12
#: The ``/wait`` timeouts the OpenAPI document promises to accept: seconds (up to 999.999),
#: ``ms``/``s``, minutes and seconds up to ``59m59.999s``, ``60m`` or ``1h``. The server
#: also takes any other Go duration up to 1 h (``0.5h``, ``3600s``).
WAIT_TIMEOUT_PATTERN = (
    r"^(?:[0-9]{1,3}(?:\.[0-9]{1,3})?(?:ms|s)?"
    r"|[0-5]?[0-9]m(?:[0-5]?[0-9](?:\.[0-9]{1,3})?s)?|60m|1h)$"
)


def get_queue(settings: SettingsDep, redis: RedisDep) -> JobQueue:
    """The producer-side queue handle over the app's Redis pool."""
    return JobQueue(redis, settings.key_prefix, settings.job_ttl)


QueueDep = Annotated[JobQueue, Depends(get_queue)]


async def get_run_db(request: Request) -> Engine | None:
    """The run store's engine, or ``None`` where no lifespan opened it (in-process
    clients): the job routes then answer from Redis alone."""
    return getattr(request.app.state, "db", None)


RunDbDep = Annotated[Engine | None, Depends(get_run_db)]


def _seconds(value: float | str | None, what: str) -> float | None:
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise ValueError(f"{what}: {exc}") from None


class EnqueueRequest(PipelineRequest, JobOptions):
    """The execute body plus how to queue the job (the queue's :class:`JobOptions`; the
    durations also as Go durations, unset ones left to the queue's defaults)."""

    #: Seconds (or a Go duration, ``"90s"``) one attempt may run.
    timeout: float | str | None = None  # type: ignore[assignment]
    #: Seconds (or a Go duration) before the job becomes available.
    delay: float | str | None = None  # type: ignore[assignment]
    #: Seconds (or a Go duration) before the first retry (doubling, with jitter).
    retry_backoff: float | str | None = None  # type: ignore[assignment]

    def job_options(self) -> dict[str, Any]:
        """The queue options set here (durations in seconds; unset ones left out)."""
        return self.model_dump(include=set(JobOptions.model_fields), exclude_none=True)

    @field_validator("timeout", "delay", "retry_backoff")
    @classmethod
    def _duration(cls, value: float | str | None, info: Any) -> float | None:
        seconds = _seconds(value, info.field_name)
        if seconds is not None and seconds < 0:
            raise ValueError(f"{info.field_name} must not be negative")
        if info.field_name == "timeout" and seconds == 0:
            raise ValueError("timeout must be more than 0")
        return seconds


class EnqueueAccepted(BaseModel):
    """The seed's answer to an enqueue."""

    message: str = "Pipeline job enqueued successfully"
    job_id: str
    status: JobStatus
    #: Set when no live worker and no pool of the cluster serves the job's queue: the job
    #: is queued all the same, and waits until a worker of that queue starts.
    warning: str | None = None


#: Seconds a queue seen served (by a live worker) is taken as served without asking Redis.
SERVED_TTL = 2.0
_SERVED: dict[tuple[int, str, str], float] = {}
_DECLARED: tuple[str, dict[str, list[str]]] | None = None


def declared_pools() -> dict[str, list[str]]:
    """The cluster's pools (``MIMIR_POOLS`` of this server) and their queues; none when it
    declares none (an invalid value is logged once, and counts as none)."""
    global _DECLARED
    text = os.environ.get("MIMIR_POOLS", "")
    if _DECLARED is None or _DECLARED[0] != text:
        try:
            cluster = pools_from_env(os.environ)
        except ClusterFileError as exc:
            logger.warning("%s", exc)
            cluster = None
        _DECLARED = (text, cluster.queues_by_pool() if cluster is not None else {})
    return _DECLARED[1]


async def unserved_warning(jobs: JobQueue, queue: str) -> str | None:
    """Why a job enqueued to ``queue`` may wait for ever, or ``None`` when something
    serves it. A queue seen served is not asked about again for :data:`SERVED_TTL` s."""
    if any(queue in queues for queues in declared_pools().values()):
        return None
    key = (id(jobs.redis), jobs.keys.prefix, queue)
    now = time.monotonic()
    if now - _SERVED.get(key, -SERVED_TTL) < SERVED_TTL:
        return None
    if queue in await jobs.live_queues():
        if len(_SERVED) > 1000:
            _SERVED.clear()
        _SERVED[key] = now
        return None
    return (
        f"no live worker serves queue {queue!r} and no pool of this cluster lists it: the "
        f"job waits until one does (mimir worker --queues {queue})"
    )


class WaitAnswer(JobRecord):
    """The job record, and whether the wait ended because the timeout passed."""

    timed_out: bool


class DeadLetterPage(BaseModel):
    entries: list[DeadLetterEntry]
    total: int
    offset: int
    limit: int


@router.post(
    "/pipelines/enqueue",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=EnqueueAccepted,
    response_model_exclude_none=True,
)
async def enqueue_pipeline(
    body: EnqueueRequest,
    jobs: QueueDep,
    settings: SettingsDep,
    store: StoreDep,
    registry: RegistryDep,
    idempotency_header: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> EnqueueAccepted:
    """Validate the pipeline, then queue it (the definition travels with the job)."""
    pipeline = await asyncio.to_thread(
        resolve_pipeline_request, body, settings, store=store, registry=registry
    )
    options = body.job_options()
    options["idempotency_key"] = body.idempotency_key or idempotency_header
    record = await jobs.enqueue(pipeline_job(pipeline, body.context, **options))
    warning = await unserved_warning(jobs, record.queue)
    return EnqueueAccepted(job_id=record.job_id, status=record.status, warning=warning)


@router.get("/status", response_model=QueueStatus)
async def queue_status(jobs: QueueDep) -> QueueStatus:
    """Jobs waiting (total and per priority), scheduled, running, dead, workers alive,
    completed and failed per second, totals; and the queues with jobs that no live worker
    and no pool of the cluster serves (``unserved_queues``)."""
    return await jobs.status(declared_pools())


def record_from_run(run: RunSummary) -> JobRecord:
    """The job record of a stored run (what the job API answers once Redis has released
    or expired the job's own record)."""
    data: dict[str, Any] = {
        "job_id": run.job_id,
        "type": run.type,
        "status": run.status,
        "priority": run.priority,
        "queue": run.queue,
        "attempts": run.attempts,
        "worker_id": run.worker_id,
        "pipeline": run.pipeline,
        "enqueued_at": run.enqueued_at or run.started_at or run.finished_at,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "error": run.error,
    }
    if isinstance(run, RunRecord):
        data.update(
            max_retries=run.max_retries,
            timeout=run.timeout,
            result=run.result,
            idempotency_key=run.options.get("idempotency_key"),
            scheduled_for=run.options.get("scheduled_for"),
            traceparent=run.options.get("traceparent"),  # its trace id outlives the record
        )
    return JobRecord.model_validate(data)


async def stored_record(db: Engine | None, job_id: str) -> JobRecord | None:
    """The job record of ``job_id``'s stored run, or ``None`` (no run, or no database)."""
    if db is None:
        return None
    run = await asyncio.to_thread(RunStore(db).get, job_id)
    return record_from_run(run) if run is not None else None


async def _stored_page(
    db: Engine | None, status_filter: JobStatus | None, queue: str | None, window: int
) -> tuple[list[JobRecord], int]:
    """The newest ``window`` stored runs as job records, and how many match in all."""
    if status_filter is not None and status_filter.value not in {
        "succeeded",
        "failed",
        "cancelled",
        "dead",
    }:
        return [], 0
    if db is None:
        return [], 0
    store = RunStore(db)
    runs_filter = RunFilter(status=status_filter.value if status_filter else None, queue=queue)

    def read() -> tuple[list[RunSummary], int]:
        found: list[RunSummary] = []
        cursor: str | None = None
        while len(found) < window:
            page, cursor = store.list(runs_filter, min(1000, window - len(found)), cursor)
            found += page
            if cursor is None:
                break
        key = (id(db), runs_filter.status, runs_filter.queue)
        cached = _COUNTS.get(key)
        if cached is not None and time.monotonic() - cached[0] < COUNT_TTL:
            return found, cached[1]
        total = store.count(runs_filter)
        if len(_COUNTS) > 1000:
            _COUNTS.clear()
        _COUNTS[key] = (time.monotonic(), total)
        return found, total

    runs, total = await asyncio.to_thread(read)
    return [record_from_run(run) for run in runs], total


@router.get("/jobs", response_model=JobPage)
async def list_jobs(
    jobs: QueueDep,
    db: RunDbDep,
    status_filter: Annotated[JobStatus | None, Query(alias="status")] = None,
    queue: str | None = None,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> JobPage:
    """Jobs newest first (by enqueue time), optionally only one status (and pool): the
    jobs Redis holds merged with the runs of the run store (the record of a job that has
    ended lives on there after Redis lets it go). ``total`` counts both, a job in both
    once among those read."""
    window = offset + limit
    if window > MERGE_WINDOW:
        return await jobs.list_jobs(status_filter, queue=queue, offset=offset, limit=limit)
    live: list[JobRecord] = []
    live_total = 0
    start = 0
    while start < window:
        page = await jobs.list_jobs(
            status_filter, queue=queue, offset=start, limit=min(1000, window - start)
        )
        live += page.jobs
        live_total = page.total
        start += page.limit
        if start >= page.total:
            break
    stored, stored_total = await _stored_page(db, status_filter, queue, window)
    merged: dict[str, JobRecord] = {}
    for record in stored:
        merged[record.job_id] = record
    both = sum(1 for record in live if record.job_id in merged)
    for record in live:  # Redis's record is the newer (version, progress)
        merged[record.job_id] = record
    ordered = sorted(merged.values(), key=lambda r: (r.enqueued_at, r.job_id), reverse=True)
    return JobPage(
        jobs=ordered[offset:window],
        total=live_total + stored_total - both,
        offset=offset,
        limit=limit,
    )


async def job_record(jobs: JobQueue, db: Engine | None, job_id: str) -> JobRecord:
    """``job_id``'s record from Redis, or from the run store once the server has stored
    and released it (a finished job no longer in Redis); JobNotFoundError if neither."""
    try:
        return await jobs.get(job_id)
    except JobNotFoundError:
        record = await stored_record(db, job_id)
        if record is None:
            raise
        return record


@router.get("/jobs/{job_id}", response_model=JobRecord)
async def get_job(job_id: str, jobs: QueueDep, db: RunDbDep) -> JobRecord:
    """The job record (from the run store once Redis no longer holds it)."""
    return await job_record(jobs, db, job_id)


@router.get("/jobs/{job_id}/wait", response_model=WaitAnswer)
async def wait_for_job(
    job_id: str,
    live: LiveDep,
    db: RunDbDep,
    timeout: Annotated[
        str, Query(json_schema_extra={"pattern": WAIT_TIMEOUT_PATTERN, "maxLength": 16})
    ] = "60s",
) -> WaitAnswer:
    """Block until the job ends or ``timeout`` (Go duration, e.g. ``500ms``, ``60s``,
    ``1m30s``) passes; either way 200 with the record and ``timed_out``. Woken by the
    server's one subscription to job events: a wait holds no Redis connection. A job that
    ended and whose record Redis let go answers at once from the run store."""
    try:
        seconds = parse_duration(timeout)
    except ValueError as exc:
        raise HTTPException(422, f"query.timeout: {exc}") from None
    if not 0 <= seconds <= MAX_WAIT:
        raise HTTPException(422, f"query.timeout: must be between 0s and {MAX_WAIT:g}s")
    try:
        result = await live.wait(job_id, seconds)
    except JobNotFoundError:
        record = await stored_record(db, job_id)
        if record is None:
            raise
        return WaitAnswer(**record.model_dump(), timed_out=False)
    return WaitAnswer(**result.job.model_dump(), timed_out=result.timed_out)


@router.post("/jobs/{job_id}/cancel", response_model=JobRecord)
async def cancel_job(job_id: str, jobs: QueueDep, db: RunDbDep) -> JobRecord:
    """Cancel: a waiting job ends now, a running one is stopped by its worker
    (``cancel_requested`` is true until it has)."""
    try:
        return await jobs.cancel(job_id)
    except JobNotFoundError:
        record = await stored_record(db, job_id)
        if record is None:
            raise
        raise JobStateError(
            f"job {job_id!r} has already ended ({record.status}); nothing to cancel"
        ) from None


@router.get("/dead-letter", response_model=DeadLetterPage)
async def dead_letter(
    jobs: QueueDep,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> DeadLetterPage:
    """Failed and dead jobs, newest first."""
    entries, total = await jobs.dead_letter(offset, limit)
    return DeadLetterPage(entries=entries, total=total, offset=offset, limit=limit)


@router.post("/dead-letter/{job_id}/retry", response_model=JobRecord)
async def retry_dead(job_id: str, jobs: QueueDep) -> JobRecord:
    """Queue a failed or dead job again, attempts reset."""
    return await jobs.retry_dead(job_id)


@router.delete("/dead-letter/{job_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_dead(job_id: str, jobs: QueueDep) -> None:
    """Remove a failed or dead job for good: its dead-letter entry and its record."""
    await jobs.delete_dead(job_id)
