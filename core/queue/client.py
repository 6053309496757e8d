"""``JobQueue``: enqueue, inspect, wait for, cancel and retry jobs (the producer side).

The consumer side (what workers call) is :mod:`mimir.core.queue.consumer`. Every method
here is one or a few round trips; Redis errors become :class:`QueueError` subclasses.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, Field
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError, ReadOnlyError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from mimir.core.queue import scripts
from mimir.core.queue.errors import (
    JobNotFoundError,
    JobStateError,
    QueueCommandError,
    QueueUnavailableError,
)
from mimir.core.queue.keys import GROUP, PRIORITIES, QueueKeys
from mimir.core.queue.models import (
    FINAL_STATUSES,
    DeadLetterEntry,
    JobRecord,
    JobStatus,
    Priority,
    QueueStatus,
    WaitResult,
    WorkerInfo,
    iso,
    record_from_hash,
)

__all__ = ["DURATION_BUCKETS", "JobPage", "JobQueue", "JobSpec", "connect"]

logger = logging.getLogger(__name__)

#: Upper bounds (seconds) of the job duration histogram's buckets.
DURATION_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600,
)  # fmt: skip

#: Longest single blocking call while waiting; longer waits loop (so no socket timeout hits).
_WAIT_SLICE = 5.0
#: Jobs per enqueue script call (bounds how long one call holds Redis).
_ENQUEUE_CHUNK = 1000
#: Seconds over which completed/failed per second are averaged.
_RATE_WINDOW = 5


class JobSpec(BaseModel):
    """What to enqueue: the payload for the job type's handler and how to run it."""

    #: Handler name (``mimir.core.jobs``): ``pipeline``, ``digital_twin`` …
    type: str = "pipeline"
    #: Handler input; for ``pipeline``: ``{"pipeline": {definition}, "context": {...}}``.
    payload: dict[str, Any] = Field(default_factory=dict)
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
    #: Display name (the pipeline's name).
    pipeline: str | None = None


class JobPage(BaseModel):
    """One page of :meth:`JobQueue.list_jobs`."""

    jobs: list[JobRecord]
    total: int
    offset: int
    limit: int


def connect(url: str, **options: Any) -> Redis:
    """A ``redis.asyncio.Redis`` for the queue (decoded strings, timeouts on every call)."""
    options.setdefault("decode_responses", True)
    options.setdefault("socket_connect_timeout", 5)
    options.setdefault("socket_timeout", _WAIT_SLICE + 10)
    options.setdefault("health_check_interval", 30)
    # A connection broken by a Redis restart is replaced and the command retried (a few
    # times, briefly); a Redis that stays away surfaces as QueueUnavailableError.
    options.setdefault("retry", Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=3))
    options.setdefault("retry_on_error", [RedisConnectionError])
    return Redis.from_url(url, **options)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@asynccontextmanager
async def redis_errors(action: str) -> AsyncIterator[None]:
    """Translate Redis errors raised inside into queue errors naming ``action``."""
    try:
        yield
    except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
        raise QueueUnavailableError(f"cannot {action}: Redis is unavailable ({exc})") from exc
    except (OutOfMemoryError, ReadOnlyError) as exc:
        # Redis is up but takes no writes now (maxmemory, a replica): it may later.
        raise QueueUnavailableError(f"cannot {action}: Redis refuses writes ({exc})") from exc
    except RedisError as exc:
        # Every input is checked before it reaches Redis, so what is left is our fault.
        raise QueueCommandError(f"cannot {action}: Redis error: {exc}") from exc


class JobQueue:
    """Producer-side handle on the queue in ``redis`` under ``prefix``."""

    def __init__(self, redis: Redis, prefix: str = "mimir:", job_ttl: int = 24 * 3600) -> None:
        self.redis = redis
        self.keys = QueueKeys(prefix)
        self.job_ttl = int(job_ttl)

    # -- enqueue ---------------------------------------------------------------------

    def _new_job(
        self, spec: JobSpec, now: datetime, now_iso: str
    ) -> tuple[dict[str, Any], JobRecord]:
        """The script's entry for one job, and the record it creates."""
        job_id = uuid.uuid4().hex
        due = now + timedelta(seconds=spec.delay) if spec.delay > 0 else None
        record = JobRecord.model_construct(
            job_id=job_id,
            type=spec.type,
            status=JobStatus.scheduled if due else JobStatus.queued,
            priority=spec.priority,
            queue=spec.queue,
            attempts=0,
            max_retries=spec.max_retries,
            timeout=spec.timeout,
            worker_id=None,
            pipeline=spec.pipeline,
            enqueued_at=now,
            scheduled_for=due,
            started_at=None,
            finished_at=None,
            progress=None,
            result=None,
            error=None,
            idempotency_key=spec.idempotency_key,
            cancel_requested=False,
        )
        stream = self.keys.stream(spec.queue, spec.priority.value)
        fields: dict[str, str] = {
            "job_id": job_id,
            "type": spec.type,
            "status": record.status.value,
            "priority": spec.priority.value,
            "queue": spec.queue,
            "attempts": "0",
            "max_retries": str(spec.max_retries),
            "retry_backoff": repr(spec.retry_backoff),
            "enqueued_at": now_iso,
            "stream": stream,
            "payload": json.dumps(spec.payload, separators=(",", ":")),
        }
        if spec.timeout is not None:
            fields["timeout"] = repr(spec.timeout)
        if spec.pipeline is not None:
            fields["pipeline"] = spec.pipeline
        if spec.idempotency_key is not None:
            fields["idempotency_key"] = spec.idempotency_key
        if due is not None:
            fields["scheduled_for"] = iso(due)
        entry = {
            "id": job_id,
            "stream": stream,
            "queue": spec.queue,
            "idem": self.keys.idempotency(spec.idempotency_key) if spec.idempotency_key else "",
            "due": int(due.timestamp() * 1000) if due else 0,
            "f": fields,
        }
        return entry, record

    async def enqueue(self, spec: JobSpec) -> JobRecord:
        """Put one job on the queue; answers its record (the earlier job's on an
        idempotency-key hit)."""
        return (await self.enqueue_many([spec]))[0]

    async def enqueue_many(self, specs: Sequence[JobSpec]) -> list[JobRecord]:
        """Put many jobs on the queue in one round trip (one script call per 1,000);
        answers their records in order."""
        context = self._context()
        now = datetime.fromtimestamp(context[7] / 1000, UTC)
        now_iso = iso(now)
        created = [self._new_job(spec, now, now_iso) for spec in specs]
        calls = []
        for first in range(0, len(created), _ENQUEUE_CHUNK):
            chunk = [entry for entry, _ in created[first : first + _ENQUEUE_CHUNK]]
            args = [
                *context,
                self.keys.index,
                self.keys.scheduled,
                self.keys.queues,
                json.dumps(chunk, separators=(",", ":")),
            ]
            calls.append((scripts.ENQUEUE_SCRIPT, args))
        async with redis_errors("enqueue"):
            answers = await scripts.run_scripts(self.redis, calls)
        flat = [item for answer in answers for item in answer]
        records: list[JobRecord] = []
        for (_, record), job_id, was_created in zip(created, flat[::2], flat[1::2], strict=True):
            if int(was_created):
                records.append(record)
            else:
                records.append(await self.get(_text(job_id)))
        return records

    async def enqueue_and_wait(self, spec: JobSpec, timeout: float) -> WaitResult:
        """Enqueue one job and wait for it to end, the two sent together (the job id is
        made here, so the wait can follow the enqueue in the same write): one round trip
        when the job ends within the first wait slice. Answers like :meth:`wait`.

        With an idempotency key the job may already exist under another id, so this
        falls back to :meth:`enqueue` then :meth:`wait`.
        """
        if spec.idempotency_key is not None:
            record = await self.enqueue(spec)
            return await self.wait(record.job_id, timeout)
        context = self._context()
        now = datetime.fromtimestamp(context[7] / 1000, UTC)
        entry, record = self._new_job(spec, now, iso(now))
        args = [
            *context,
            self.keys.index,
            self.keys.scheduled,
            self.keys.queues,
            json.dumps([entry], separators=(",", ":")),
        ]
        done_key = self.keys.done(record.job_id)
        started = time.monotonic()
        first_slice = max(0.001, min(timeout, _WAIT_SLICE))
        async with redis_errors("enqueue"), self.redis.pipeline(transaction=False) as pipe:
            # EVAL, not EVALSHA: a missing script must not leave the wait blocking.
            pipe.eval(scripts.ENQUEUE_SCRIPT.source, 0, *args)
            pipe.blmove(done_key, done_key, first_slice, "LEFT", "RIGHT")  # type: ignore[arg-type]
            enqueued, token = await pipe.execute(raise_on_error=False)
        if isinstance(enqueued, Exception):
            async with redis_errors("enqueue"):
                raise enqueued
        if isinstance(token, str | bytes):
            text = _text(token)
            if text.startswith("{"):
                return WaitResult(job=record_from_hash(json.loads(text)), timed_out=False)
        remaining = timeout - (time.monotonic() - started)
        return await self.wait(record.job_id, max(0.0, remaining))

    # -- inspect ---------------------------------------------------------------------

    async def get(self, job_id: str) -> JobRecord:
        """The job's record; :class:`JobNotFoundError` when unknown or expired."""
        async with redis_errors("read the job"):
            raw = await self.redis.hgetall(self.keys.job(job_id))
        if not raw:
            raise JobNotFoundError(job_id)
        return record_from_hash(raw)

    async def payload(self, job_id: str) -> dict[str, Any]:
        """The job's payload (what its handler receives)."""
        async with redis_errors("read the job"):
            raw = await self.redis.hget(self.keys.job(job_id), "payload")
        if raw is None:
            raise JobNotFoundError(job_id)
        return dict(json.loads(_text(raw)))

    async def wait(self, job_id: str, timeout: float) -> WaitResult:
        """Block until the job ends or ``timeout`` seconds pass; never raises on timeout.

        Wakes on what the ending script pushes to the job's done list (the final record,
        or just its status when the record is large), not by polling. The blocking call
        is ``BLMOVE list list``: it rotates the element in place, so every waiter sees it.
        """
        done_key = self.keys.done(job_id)
        deadline = time.monotonic() + max(0.0, timeout)
        async with redis_errors("wait for the job"):
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                # The timeout has 1 ms resolution; 0 would mean "forever".
                slice_ = max(0.001, min(remaining, _WAIT_SLICE))
                token = await self.redis.blmove(
                    done_key,
                    done_key,
                    slice_,  # type: ignore[arg-type]  # Redis takes fractional seconds
                    "LEFT",
                    "RIGHT",
                )
                if token is not None:
                    text = _text(token)
                    if text.startswith("{"):
                        return WaitResult(job=record_from_hash(json.loads(text)), timed_out=False)
                    raw = await self.redis.hgetall(self.keys.job(job_id))
                    if not raw:
                        raise JobNotFoundError(job_id)
                    return WaitResult(job=record_from_hash(raw), timed_out=False)
                # Nothing pushed yet: make sure the job exists, and has not ended without
                # a token (one lost to a Redis crash between AOF syncs), before waiting on.
                status = await self.redis.hget(self.keys.job(job_id), "status")
                if status is None:
                    raise JobNotFoundError(job_id)
                if _text(status) in FINAL_STATUSES:
                    break
        record = await self.get(job_id)
        return WaitResult(job=record, timed_out=not record.is_final)

    async def list_jobs(
        self,
        status: JobStatus | None = None,
        *,
        queue: str | None = None,
        offset: int = 0,
        limit: int = 50,
    ) -> JobPage:
        """Jobs newest first, optionally only those in ``status`` (and ``queue``)."""
        offset, limit = max(0, offset), max(1, min(limit, 1000))
        async with redis_errors("list jobs"):
            if status is None and queue is None:
                total = int(await self.redis.zcard(self.keys.index))
                ids = await self.redis.zrevrange(self.keys.index, offset, offset + limit - 1)
                return JobPage(
                    jobs=await self._records([_text(i) for i in ids]),
                    total=total,
                    offset=offset,
                    limit=limit,
                )
            # Filtered: walk the index newest first, counting every match for ``total``.
            wanted: list[str] = []
            total = cursor = 0
            chunk = 1000
            while True:
                ids = await self.redis.zrevrange(self.keys.index, cursor, cursor + chunk - 1)
                if not ids:
                    break
                cursor += len(ids)
                async with self.redis.pipeline(transaction=False) as pipe:
                    for job_id in ids:
                        pipe.hmget(self.keys.job(_text(job_id)), ["status", "queue"])
                    heads = await pipe.execute()
                for job_id, (st, qu) in zip(ids, heads, strict=True):
                    if st is None:
                        continue
                    if status is not None and _text(st) != status.value:
                        continue
                    if queue is not None and (qu is None or _text(qu) != queue):
                        continue
                    if offset <= total < offset + limit:
                        wanted.append(_text(job_id))
                    total += 1
            jobs = await self._records(wanted)
        return JobPage(jobs=jobs, total=total, offset=offset, limit=limit)

    async def _records(self, job_ids: Sequence[str]) -> list[JobRecord]:
        if not job_ids:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hgetall(self.keys.job(job_id))
            raws = await pipe.execute()
        return [record_from_hash(raw) for raw in raws if raw]

    # -- control ---------------------------------------------------------------------

    def _context(self, worker_id: str = "") -> list[Any]:
        return scripts.context_args(self.keys, self.job_ttl, worker_id)

    async def cancel(self, job_id: str) -> JobRecord:
        """Cancel the job: a queued or scheduled job ends now; a running one is asked to
        stop (its worker cancels it, ``cancel_requested`` shows meanwhile). Cancelling
        an ended job is a :class:`JobStateError`."""
        args = [*self._context(), job_id, self.keys.scheduled, self.keys.cancel]
        async with redis_errors("cancel the job"):
            outcome = _text(await scripts.CANCEL_SCRIPT(self.redis, args))
        if outcome == "missing":
            raise JobNotFoundError(job_id)
        if outcome not in {"cancelled", "cancelling"}:
            ended = outcome.removeprefix("ended:")
            raise JobStateError(f"job {job_id!r} has already ended ({ended}); nothing to cancel")
        return await self.get(job_id)

    async def retry_dead(self, job_id: str) -> JobRecord:
        """Put a failed or dead job back on its queue with its attempts reset."""
        args = [*self._context(), job_id]
        async with redis_errors("retry the job"):
            answer = await scripts.RETRY_DEAD_SCRIPT(self.redis, args)
        if isinstance(answer, list):  # the record as re-queued (a worker may take it at once)
            return record_from_hash(dict(zip(answer[::2], answer[1::2], strict=True)))
        outcome = _text(answer)
        if outcome == "missing":
            raise JobNotFoundError(job_id)
        raise JobStateError(f"job {job_id!r} is {outcome}; only failed or dead jobs can be retried")

    async def delete_dead(self, job_id: str) -> None:
        """Remove a failed or dead job for good (its dead-letter entry and its record)."""
        args = [*self._context(), job_id, self.keys.index, self.keys.idempotency_prefix]
        async with redis_errors("delete the job"):
            outcome = _text(await scripts.DELETE_DEAD_SCRIPT(self.redis, args))
        if outcome == "missing":
            raise JobNotFoundError(job_id)
        if outcome != "deleted":
            raise JobStateError(
                f"job {job_id!r} is {outcome}; only failed or dead jobs can be deleted"
            )

    async def dead_letter(
        self, offset: int = 0, limit: int = 50
    ) -> tuple[list[DeadLetterEntry], int]:
        """Dead-letter entries newest first, with their records when still kept; and
        the total count."""
        offset, limit = max(0, offset), max(1, min(limit, 1000))
        async with redis_errors("read the dead letter"):
            total = int(await self.redis.xlen(self.keys.dead))
            entries = await self.redis.xrevrange(self.keys.dead, count=offset + limit) or []
            decoded = [
                (_text(entry_id), {_text(k): _text(v) for k, v in (fields or {}).items()})
                for entry_id, fields in entries[offset:]
            ]
            async with self.redis.pipeline(transaction=False) as pipe:
                for _, data in decoded:
                    pipe.hgetall(self.keys.job(data.get("job_id", "")))
                raws = await pipe.execute()
        out = []
        for (entry_id, data), raw in zip(decoded, raws, strict=True):
            entry = {
                "entry_id": entry_id,
                "job_id": data.get("job_id", ""),
                "status": data.get("status", "dead"),
                "error": data.get("error") or None,
                "at": data.get("at") or None,  # ISO text; the model parses it
                "job": record_from_hash(raw) if raw else None,
            }
            out.append(DeadLetterEntry.model_validate(entry))
        return out, total

    # -- figures ---------------------------------------------------------------------

    async def status(self) -> QueueStatus:
        """Queue length (total, per priority, per pool), scheduled, running, dead,
        live workers, completed/failed per second and all-time totals."""
        now = int(time.time())
        async with redis_errors("read the queue status"):
            pools = sorted(_text(q) for q in await self.redis.smembers(self.keys.queues))
            streams = [
                (pool, prio, self.keys.stream(pool, prio)) for pool in pools for prio in PRIORITIES
            ]
            async with self.redis.pipeline(transaction=False) as pipe:
                for _, _, stream in streams:
                    pipe.xlen(stream)
                    pipe.xpending(stream, GROUP)
                pipe.zcard(self.keys.scheduled)
                pipe.xlen(self.keys.dead)
                pipe.hgetall(self.keys.totals)
                for second in range(now - _RATE_WINDOW, now):
                    pipe.hgetall(self.keys.rate(second))
                results = await pipe.execute(raise_on_error=False)
            workers = await self.workers()
        by_priority = dict.fromkeys(PRIORITIES, 0)
        by_queue: dict[str, int] = {}
        running = 0
        for i, (pool, prio, _) in enumerate(streams):
            length, pending = results[2 * i], results[2 * i + 1]
            length = length if isinstance(length, int) else 0
            pending_count = int(pending["pending"]) if isinstance(pending, dict) else 0
            waiting = max(0, length - pending_count)
            by_priority[prio] += waiting
            by_queue[pool] = by_queue.get(pool, 0) + waiting
            running += pending_count
        rest = results[2 * len(streams) :]
        scheduled, dead, totals_raw, *rates = rest
        totals = {s: 0 for s in ("succeeded", "failed", "cancelled", "dead")}
        if isinstance(totals_raw, dict):
            totals.update({_text(k): int(v) for k, v in totals_raw.items()})
        completed = failed = 0
        for rate in rates:
            if isinstance(rate, dict):
                counts = {_text(k): int(v) for k, v in rate.items()}
                completed += counts.get("succeeded", 0)
                failed += counts.get("failed", 0) + counts.get("dead", 0)
        return QueueStatus(
            queue_length=sum(by_priority.values()),
            by_priority=by_priority,
            by_queue=by_queue,
            scheduled=int(scheduled) if isinstance(scheduled, int) else 0,
            running=running,
            dead=int(dead) if isinstance(dead, int) else 0,
            workers=len(workers),
            completed_per_sec=round(completed / _RATE_WINDOW, 2),
            failed_per_sec=round(failed / _RATE_WINDOW, 2),
            totals=totals,
        )

    async def workers(self) -> list[WorkerInfo]:
        """Workers whose heartbeat has not expired, oldest first."""
        async with redis_errors("list workers"):
            ids = [_text(w) for w in await self.redis.zrange(self.keys.workers, 0, -1)]
            if not ids:
                return []
            async with self.redis.pipeline(transaction=False) as pipe:
                for worker_id in ids:
                    pipe.hgetall(self.keys.worker(worker_id))
                raws = await pipe.execute()
            gone = [w for w, raw in zip(ids, raws, strict=True) if not raw]
            if gone:
                await self.redis.zrem(self.keys.workers, *gone)
        now = time.time()
        out = []
        for raw in raws:
            if not raw:
                continue
            data = {_text(k): _text(v) for k, v in raw.items()}
            info = WorkerInfo.model_validate(
                {
                    **data,
                    "queues": json.loads(data.get("queues", "[]")),
                    "current_jobs": json.loads(data.get("current_jobs", "[]")),
                    "draining": data.get("draining") == "1",
                }
            )
            if info.last_heartbeat is not None:
                info.heartbeat_age_s = round(max(0.0, now - info.last_heartbeat.timestamp()), 3)
            out.append(info)
        return out

    async def duration_histogram(self) -> tuple[list[tuple[float, int]], float, int]:
        """Job durations: cumulative ``(upper bound, count)`` per bucket (the last is
        ``inf``), the sum of durations and the count."""
        async with redis_errors("read job durations"):
            raw = await self.redis.hgetall(self.keys.duration)
        data = {_text(k): _text(v) for k, v in raw.items()}
        buckets: list[tuple[float, int]] = []
        running = 0
        for bound in (*DURATION_BUCKETS, math.inf):
            running += int(data.get(bucket_field(bound), 0))
            buckets.append((bound, running))
        return buckets, float(data.get("sum", 0.0)), int(data.get("count", 0))

    async def ping(self) -> None:
        """Raise :class:`QueueUnavailableError` unless Redis answers."""
        async with redis_errors("reach Redis"):
            await asyncio.wait_for(self.redis.ping(), timeout=5)

    async def aclose(self) -> None:
        await self.redis.aclose()


def bucket_field(bound: float) -> str:
    """Hash field of the duration histogram bucket whose upper bound is ``bound``."""
    return "le_inf" if math.isinf(bound) else f"le_{bound:g}"


def bucket_for(seconds: float) -> str:
    """Hash field of the smallest bucket holding ``seconds``."""
    for bound in DURATION_BUCKETS:
        if seconds <= bound:
            return bucket_field(bound)
    return bucket_field(math.inf)
