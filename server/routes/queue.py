"""The job queue over HTTP (the seed's calls, exactly, plus list, cancel and dead letter).

- ``POST /api/v1/queue/pipelines/enqueue`` — the execute body (``pipeline_file`` |
  ``pipeline_name`` | ``pipeline``, ``context``) plus ``priority``, ``timeout``,
  ``max_retries``, ``queue``, ``delay``, ``idempotency_key`` → ``202``;
- ``GET /api/v1/queue/jobs/{id}``, ``GET /api/v1/queue/jobs/{id}/wait?timeout=60s``;
- ``GET /api/v1/queue/status``, ``GET /api/v1/queue/jobs?status=&queue=&offset=&limit=``;
- ``POST /api/v1/queue/jobs/{id}/cancel``;
- ``GET /api/v1/queue/dead-letter``, ``POST /api/v1/queue/dead-letter/{id}/retry``,
  ``DELETE /api/v1/queue/dead-letter/{id}``.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Query, status
from pydantic import BaseModel, field_validator

from mimir.core.durations import parse_duration
from mimir.core.jobs import pipeline_job
from mimir.core.pipeline.requests import PipelineRequest, resolve_pipeline_request
from mimir.core.queue import (
    DeadLetterEntry,
    JobOptions,
    JobPage,
    JobQueue,
    JobRecord,
    JobStatus,
    QueueStatus,
)
from mimir.server.deps import LiveDep, RedisDep, RegistryDep, SettingsDep, StoreDep

__all__ = ["EnqueueAccepted", "EnqueueRequest", "QueueDep", "get_queue", "router"]

router = APIRouter(prefix="/api/v1/queue", tags=["queue"])

#: Longest wait one ``/wait`` call may ask for.
MAX_WAIT = 3600.0
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


class WaitAnswer(JobRecord):
    """The job record, and whether the wait ended because the timeout passed."""

    timed_out: bool


class DeadLetterPage(BaseModel):
    entries: list[DeadLetterEntry]
    total: int
    offset: int
    limit: int


@router.post(
    "/pipelines/enqueue", status_code=status.HTTP_202_ACCEPTED, response_model=EnqueueAccepted
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
    return EnqueueAccepted(job_id=record.job_id, status=record.status)


@router.get("/status", response_model=QueueStatus)
async def queue_status(jobs: QueueDep) -> QueueStatus:
    """Jobs waiting (total and per priority), scheduled, running, dead, workers alive,
    completed and failed per second, totals."""
    return await jobs.status()


@router.get("/jobs", response_model=JobPage)
async def list_jobs(
    jobs: QueueDep,
    status_filter: Annotated[JobStatus | None, Query(alias="status")] = None,
    queue: str | None = None,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> JobPage:
    """Jobs newest first, optionally only one status (and pool)."""
    return await jobs.list_jobs(status_filter, queue=queue, offset=offset, limit=limit)


@router.get("/jobs/{job_id}", response_model=JobRecord)
async def get_job(job_id: str, jobs: QueueDep) -> JobRecord:
    """The job record."""
    return await jobs.get(job_id)


@router.get("/jobs/{job_id}/wait", response_model=WaitAnswer)
async def wait_for_job(
    job_id: str,
    live: LiveDep,
    timeout: Annotated[
        str, Query(json_schema_extra={"pattern": WAIT_TIMEOUT_PATTERN, "maxLength": 16})
    ] = "60s",
) -> WaitAnswer:
    """Block until the job ends or ``timeout`` (Go duration, e.g. ``500ms``, ``60s``,
    ``1m30s``) passes; either way 200 with the record and ``timed_out``. Woken by the
    server's one subscription to job events: a wait holds no Redis connection."""
    try:
        seconds = parse_duration(timeout)
    except ValueError as exc:
        raise HTTPException(422, f"query.timeout: {exc}") from None
    if not 0 <= seconds <= MAX_WAIT:
        raise HTTPException(422, f"query.timeout: must be between 0s and {MAX_WAIT:g}s")
    result = await live.wait(job_id, seconds)
    return WaitAnswer(**result.job.model_dump(), timed_out=result.timed_out)


@router.post("/jobs/{job_id}/cancel", response_model=JobRecord)
async def cancel_job(job_id: str, jobs: QueueDep) -> JobRecord:
    """Cancel: a waiting job ends now, a running one is stopped by its worker
    (``cancel_requested`` is true until it has)."""
    return await jobs.cancel(job_id)


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
