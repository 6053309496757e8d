"""``JobQueue``: enqueue, inspect, wait for, cancel and retry jobs (the producer side).

The consumer side (what workers call) is :mod:`mimir.core.queue.consumer`. Every method
here is one or a few round trips; Redis errors become :class:`QueueError` subclasses
(:func:`redis_errors`). The Redis client comes from :func:`connect` (replies as ``str``).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple, cast

from opentelemetry.trace import SpanKind
from pydantic import BaseModel
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ReadOnlyError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from mimir.core import telemetry
from mimir.core.queue import metrics, scripts
from mimir.core.queue.connection import BLOCK_SLICE, NotReplicatedError, connect
from mimir.core.queue.errors import (
    JobNotFoundError,
    JobStateError,
    QueueAuthError,
    QueueCommandError,
    QueueFullError,
    QueueUnavailableError,
    WorkerNotFoundError,
    is_auth_error,
    is_oom,
    queue_full_message,
    redis_auth_message,
)
from mimir.core.queue.keys import GROUP, PRIORITIES, QueueKeys, require_hash_tag
from mimir.core.queue.models import (
    FINAL_STATUSES,
    DeadLetterEntry,
    JobRecord,
    JobSpec,
    JobStatus,
    PoolFigures,
    QueueStatus,
    WaitResult,
    WorkerInfo,
    iso,
    record_from_hash,
)
from mimir.core.queue.protocol import INTERNAL_FIELDS, RECORD_FIELDS, JSONText, encode

__all__ = [
    "CONTROL_TTL",
    "DURATION_BUCKETS",
    "WORKER_ACTIONS",
    "JobPage",
    "JobQueue",
    "JobSpec",
    "connect",
]

logger = logging.getLogger(__name__)

#: Upper bounds (seconds) of the job duration histogram's buckets.
DURATION_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600,
)  # fmt: skip

#: Longest single blocking call while waiting; longer waits loop (so no socket timeout hits).
_WAIT_SLICE = BLOCK_SLICE
#: Pause between two reads of a job's done list while a full Redis refuses BLMOVE.
_FULL_POLL = 0.2
#: First wait sent together with the enqueue in :meth:`JobQueue.enqueue_and_wait`.
_FIRST_SLICE = 1.0
#: Jobs per enqueue script call (bounds how long one call holds Redis).
_ENQUEUE_CHUNK = 1000
#: Reads of a key a script declares, should the record say another at the script's turn
#: (a job's stream and idempotency key never change: one read in practice).
_MOVED_TRIES = 3
#: Seconds over which completed/failed per second are averaged.
_RATE_WINDOW = 5
#: What :meth:`JobQueue.control_worker` may ask of a worker.
WORKER_ACTIONS = ("drain", "stop")
#: Seconds a request to a worker waits for its next heartbeat (a worker away longer than
#: that has lost its registration anyway).
CONTROL_TTL = 60


_dumps = functools.partial(json.dumps, separators=(",", ":"), default=str)


class _Shape(NamedTuple):
    """What the jobs of one spec enqueued in one call share (see ``JobQueue._shape``)."""

    stream: str
    head: str
    tail: str
    prototype: JobRecord
    idem_key: str | None


class JobPage(BaseModel):
    """One page of :meth:`JobQueue.list_jobs`."""

    jobs: list[JobRecord]
    total: int
    offset: int
    limit: int


@asynccontextmanager
async def redis_errors(action: str) -> AsyncIterator[None]:
    """Translate Redis errors raised inside into queue errors naming ``action``."""
    try:
        try:
            yield
        except RedisError as exc:
            if is_auth_error(exc):
                # No password, or a refused one: one answer whichever way Redis said it
                # (redis-py's AuthenticationError is a ConnectionError; an AUTH argument
                # error is a ResponseError).
                raise QueueAuthError(f"cannot {action}: {redis_auth_message(exc)}") from exc
            raise
    except NotReplicatedError as exc:
        # MIMIR_REDIS_MIN_REPLICAS: the primary has the write, no replica said so in time.
        raise QueueUnavailableError(
            f"cannot {action}: Redis did not replicate the write in time ({exc}); "
            "a retry with the same idempotency key cannot enqueue twice"
        ) from exc
    except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
        raise QueueUnavailableError(f"cannot {action}: Redis is unavailable ({exc})") from exc
    except ReadOnlyError as exc:
        # Redis is up but takes no writes now (a replica): it may later.
        raise QueueUnavailableError(f"cannot {action}: Redis refuses writes ({exc})") from exc
    except RedisError as exc:
        if is_oom(exc):  # also Redis 6.2's script error wrapping the OOM reply
            raise QueueFullError(queue_full_message(action)) from exc
        # Every input is checked before it reaches Redis, so what is left is our fault.
        raise QueueCommandError(f"cannot {action}: Redis error: {exc}") from exc


class JobQueue:
    """Producer-side handle on the queue in ``redis`` under ``prefix``."""

    def __init__(self, redis: Redis, prefix: str = "mimir:", job_ttl: int = 24 * 3600) -> None:
        require_hash_tag(redis, prefix)  # a Redis Cluster needs one slot per prefix
        self.redis = redis
        self.keys = QueueKeys(prefix)
        self.job_ttl = int(job_ttl)
        #: Whether Redis ran ``ENQUEUE`` for this handle by SHA (see :meth:`enqueue_and_wait`).
        self._script_known = False

    # -- enqueue ---------------------------------------------------------------------

    def _shape(
        self, spec: JobSpec, now: datetime, now_iso: str, traceparent: str | None = None
    ) -> _Shape:
        """What every job of ``spec`` enqueued at ``now`` shares: all of its hash fields
        but the id, encoded once (a batch of one spec encodes them once, not per job)."""
        due = now + timedelta(seconds=spec.delay) if spec.delay > 0 else None
        status = JobStatus.scheduled if due else JobStatus.queued
        stream = self.keys.stream(spec.queue, spec.priority.value)
        values: dict[str, Any] = {
            "type": spec.type,
            "status": status.value,
            "priority": spec.priority.value,
            "queue": spec.queue,
            "attempts": 0,
            "max_retries": spec.max_retries,
            "timeout": spec.timeout,
            "pipeline": spec.pipeline,
            "enqueued_at": now_iso,
            "scheduled_for": iso(due) if due is not None else None,
            "idempotency_key": spec.idempotency_key,
            "retry_backoff": spec.retry_backoff,
            "stream": stream,
            "payload": spec.payload,
            "origin": spec.origin,
            "traceparent": traceparent,
        }
        fields = {
            name: encode(RECORD_FIELDS.get(name) or INTERNAL_FIELDS[name], value)
            for name, value in values.items()
            if value is not None
        }
        idem = spec.idempotency_key is not None
        # One entry of the script's ``jobs`` argument is ``head + job id + tail``.
        head = (
            '{"queue":' + _dumps(spec.queue) + ',"idem":' + ("1" if idem else "0")
            + ',"due":' + str(int(due.timestamp() * 1000) if due else 0)
            + ',"f":' + _dumps(fields)[:-1] + ',"job_id":"'
        )  # fmt: skip
        prototype = JobRecord.model_construct(
            job_id="",
            type=spec.type,
            status=status,
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
            origin=spec.origin,
            version=1,  # what ENQUEUE writes
            traceparent=traceparent,
        )
        idem_key = self.keys.idempotency(spec.idempotency_key) if idem else None  # type: ignore[arg-type]
        return _Shape(stream, head, '"}}', prototype, idem_key)

    def _new_jobs(
        self, specs: Sequence[JobSpec], now: datetime, traceparent: str | None = None
    ) -> tuple[list[tuple[list[str], list[Any]]], list[str], list[JobRecord]]:
        """Each job's ``ENQUEUE`` group (its keys), its entry in the script's ``jobs``
        argument (JSON text), and the record it creates (with ``traceparent``, the
        enqueue's trace context, when traced)."""
        now_iso = iso(now)
        shapes: dict[int, _Shape] = {}
        groups: list[tuple[list[str], list[Any]]] = []
        entries: list[str] = []
        records: list[JobRecord] = []
        job_key = self.keys.job
        for spec in specs:
            shape = shapes.get(id(spec))
            if shape is None:
                shape = shapes[id(spec)] = self._shape(spec, now, now_iso, traceparent)
            job_id = uuid.uuid4().hex
            key = job_key(job_id)
            groups.append(([key, shape.stream, shape.idem_key or key], []))
            entries.append(shape.head + job_id + shape.tail)
            records.append(shape.prototype.model_copy(update={"job_id": job_id}))
        return groups, entries, records

    def _enqueue_call(
        self, now_ms: int, groups: Sequence[tuple[list[str], list[Any]]], entries: Sequence[str]
    ) -> scripts.Call:
        return scripts.ENQUEUE_SCRIPT.call(
            keys={
                "index": self.keys.index,
                "scheduled": self.keys.scheduled,
                "queues": self.keys.queues,
            },
            argv={
                "now_ms": now_ms,
                "ttl": self.job_ttl,
                "events": self.keys.events,
                "jobs": JSONText("[" + ",".join(entries) + "]"),
            },
            each=groups,
        )

    async def enqueue(self, spec: JobSpec) -> JobRecord:
        """Put one job on the queue; answers its record (the earlier job's on an
        idempotency-key hit)."""
        return (await self.enqueue_many([spec]))[0]

    async def enqueue_many(self, specs: Sequence[JobSpec]) -> list[JobRecord]:
        """Put many jobs on the queue in one round trip (one script call per 1,000);
        answers their records in order. Traced, in an ``enqueue`` span whose context
        each job keeps (its ``traceparent``)."""
        if not specs or not telemetry.tracing_enabled():
            return await self._enqueue_many(specs, None)
        first = specs[0]
        with telemetry.span(
            "enqueue",
            kind=SpanKind.PRODUCER,
            attributes=lambda: {
                "messaging.system": "redis",
                "messaging.operation.type": "send",
                "messaging.destination.name": first.queue,
                "messaging.batch.message_count": len(specs),
                "mimir.queue": first.queue,
                "mimir.job.type": first.type,
                "mimir.pipeline": first.pipeline or "",
            },
        ) as current:
            records = await self._enqueue_many(specs, telemetry.traceparent())
            if len(records) == 1 and current.is_recording():
                current.set_attribute("mimir.job.id", records[0].job_id)
            return records

    async def _enqueue_many(
        self, specs: Sequence[JobSpec], traceparent: str | None
    ) -> list[JobRecord]:
        now_ms, now = _now()
        groups, entries, created = self._new_jobs(specs, now, traceparent)
        calls = [
            self._enqueue_call(
                now_ms,
                groups[first : first + _ENQUEUE_CHUNK],
                entries[first : first + _ENQUEUE_CHUNK],
            )
            for first in range(0, len(created), _ENQUEUE_CHUNK)
        ]
        async with redis_errors("enqueue"):
            # With MIMIR_REDIS_MIN_REPLICAS, answers only once replicas have the jobs.
            answers = await scripts.run_scripts(self.redis, calls, durable="enqueue")
        flat = [item for answer in answers for item in answer]
        records: list[JobRecord] = []
        for record, job_id, was_created in zip(created, flat[::2], flat[1::2], strict=True):
            if int(was_created):
                records.append(record)
            else:
                records.append(await self._existing(job_id, record))
        return records

    async def _existing(self, job_id: str, sent: JobRecord) -> JobRecord:
        """The record of the job an idempotency key names. Once released (its run is
        stored) only its status is left in Redis: the answer is then that status with the
        options just sent (the run store has the rest)."""
        try:
            return await self.get(job_id)
        except JobNotFoundError:
            async with redis_errors("read the job"):
                token = await self.redis.lindex(self.keys.done(job_id), 0)
            if token not in {status.value for status in FINAL_STATUSES}:
                raise
            return sent.model_copy(update={"job_id": job_id, "status": JobStatus(token)})

    async def enqueue_and_wait(self, spec: JobSpec, timeout: float) -> WaitResult:
        """Enqueue one job and wait for it to end, the two sent together (the job id is
        made here, so the wait can follow the enqueue in the same write): one round trip
        when the job ends within the first wait slice. Answers like :meth:`wait`.

        The script goes by SHA. Until this handle has seen Redis run it (and again after
        ``NOSCRIPT``: Redis restarted), the enqueue goes alone first, so a missing script
        never leaves a wait blocking behind it; should Redis lose it between two calls,
        that one call's first wait (at most :data:`_FIRST_SLICE`) is spent before the
        script is loaded and the job enqueued.
        With an idempotency key the job may already exist under another id, so this
        falls back to :meth:`enqueue` then :meth:`wait`.
        """
        if (
            spec.idempotency_key is not None
            or not self._script_known
            or telemetry.tracing_enabled()  # through the traced enqueue
        ):
            record = await self.enqueue(spec)
            self._script_known = True
            return await self.wait(record.job_id, timeout)
        now_ms, now = _now()
        groups, entries, (record,) = self._new_jobs([spec], now)
        call = self._enqueue_call(now_ms, groups, entries)
        done_key = self.keys.done(record.job_id)
        started = time.monotonic()
        first_slice = max(0.001, min(timeout, _FIRST_SLICE))
        async with redis_errors("enqueue"), self.redis.pipeline(transaction=False) as pipe:
            call.queue_on(pipe)
            pipe.blmove(done_key, done_key, first_slice, "LEFT", "RIGHT")  # type: ignore[arg-type]
            enqueued, token = await pipe.execute(raise_on_error=False)
        if isinstance(enqueued, NoScriptError):
            self._script_known = False
            async with redis_errors("enqueue"):
                enqueued = await call.run(self.redis)  # loads it
            token = None
        if isinstance(enqueued, Exception):
            async with redis_errors("enqueue"):
                raise enqueued
        if isinstance(token, str) and token.startswith("{"):
            return WaitResult(job=record_from_hash(json.loads(token)), timed_out=False)
        remaining = timeout - (time.monotonic() - started)
        return await self.wait(record.job_id, max(0.0, remaining))

    # -- inspect ---------------------------------------------------------------------

    async def get(self, job_id: str) -> JobRecord:
        """The job's record; :class:`JobNotFoundError` when unknown or expired."""
        async with redis_errors("read the job"):
            raw = cast(dict[str, str], await self.redis.hgetall(self.keys.job(job_id)))
        if not raw:
            raise JobNotFoundError(job_id)
        return record_from_hash(raw)

    async def get_many(self, job_ids: Sequence[str]) -> list[JobRecord | None]:
        """Each job's record (``None`` when unknown or expired), in one round trip."""
        if not job_ids:
            return []
        async with redis_errors("read jobs"), self.redis.pipeline(False) as pipe:
            for job_id in job_ids:
                pipe.hgetall(self.keys.job(job_id))
            raws = cast(list[dict[str, str]], await pipe.execute())
        return [record_from_hash(raw) if raw else None for raw in raws]

    async def payload(self, job_id: str) -> dict[str, Any]:
        """The job's payload (what its handler receives)."""
        async with redis_errors("read the job"):
            raw = await self.redis.hget(self.keys.job(job_id), "payload")
        if raw is None:
            raise JobNotFoundError(job_id)
        return dict(json.loads(raw))

    async def statuses(self, job_ids: Sequence[str]) -> list[str | None]:
        """The status of each job (``None`` when it has no record), in one round trip."""
        if not job_ids:
            return []
        async with redis_errors("read job statuses"), self.redis.pipeline(False) as pipe:
            for job_id in job_ids:
                pipe.hget(self.keys.job(job_id), "status")
            return cast(list[str | None], await pipe.execute())

    async def wait(self, job_id: str, timeout: float) -> WaitResult:
        """Block until the job ends or ``timeout`` seconds pass; never raises on timeout.

        Wakes on what the ending script pushes to the job's done list (the final record,
        or just its status when the record is large), not by polling. The blocking call
        is ``BLMOVE list list``: it rotates the element in place, so every waiter sees it.
        While Redis is full (``maxmemory``) it refuses BLMOVE, and the wait reads the done
        list every :data:`_FULL_POLL` seconds instead.
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
                token: str | None
                try:
                    token = await self.redis.blmove(  # type: ignore[assignment]
                        done_key,
                        done_key,
                        slice_,  # type: ignore[arg-type]  # Redis takes fractional seconds
                        "LEFT",
                        "RIGHT",
                    )
                except RedisError as exc:
                    if not is_oom(exc):
                        raise
                    # A full Redis refuses BLMOVE (it may add data) before it blocks:
                    # read the done list instead, every _FULL_POLL seconds.
                    token = await self.redis.lindex(done_key, 0)  # type: ignore[assignment]
                    if token is None:
                        await asyncio.sleep(min(_FULL_POLL, max(0.0, remaining)))
                if token is not None:
                    text = token
                    if text.startswith("{"):
                        return WaitResult(job=record_from_hash(json.loads(text)), timed_out=False)
                    raw = cast(dict[str, str], await self.redis.hgetall(self.keys.job(job_id)))
                    if not raw:
                        raise JobNotFoundError(job_id)
                    return WaitResult(job=record_from_hash(raw), timed_out=False)
                # Nothing pushed yet: make sure the job exists, and has not ended without
                # a token (one lost to a Redis crash between AOF syncs), before waiting on.
                status = await self.redis.hget(self.keys.job(job_id), "status")
                if status is None:
                    raise JobNotFoundError(job_id)
                if status in FINAL_STATUSES:
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
                    jobs=await self._records(cast(list[str], ids)),
                    total=total,
                    offset=offset,
                    limit=limit,
                )
            # Filtered: walk the index newest first, counting every match for ``total``.
            wanted: list[str] = []
            total = cursor = 0
            chunk = 1000
            while True:
                page = cast(
                    list[str],
                    await self.redis.zrevrange(self.keys.index, cursor, cursor + chunk - 1),
                )
                if not page:
                    break
                cursor += len(page)
                async with self.redis.pipeline(transaction=False) as pipe:
                    for job_id in page:
                        pipe.hmget(self.keys.job(job_id), ["status", "queue"])
                    heads = await pipe.execute()
                for job_id, (st, qu) in zip(page, heads, strict=True):
                    if st is None:
                        continue
                    if status is not None and st != status.value:
                        continue
                    if queue is not None and (qu is None or qu != queue):
                        continue
                    if offset <= total < offset + limit:
                        wanted.append(job_id)
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

    async def cancel(self, job_id: str) -> JobRecord:
        """Cancel the job: a queued or scheduled job ends now; a running one is asked to
        stop (its worker cancels it, ``cancel_requested`` shows meanwhile). Cancelling
        an ended job is a :class:`JobStateError`."""
        async with redis_errors("cancel the job"):
            for _ in range(_MOVED_TRIES):
                # The job's stream, declared to the script (which checks it is still the
                # record's): every key a script touches is in KEYS where it can be.
                stream = await self._declared(job_id, "stream")
                now_ms, _ = _now()
                call = scripts.CANCEL_SCRIPT.call(
                    keys={
                        "job": self.keys.job(job_id),
                        "done": self.keys.done(job_id),
                        "scheduled": self.keys.scheduled,
                        **self.keys.ending(now_ms),
                        "stream": stream,
                    },
                    argv={
                        "now_ms": now_ms,
                        "ttl": self.job_ttl,
                        "events": self.keys.events,
                        "cancel": self.keys.cancel,
                        "job_id": job_id,
                    },
                )
                outcome = await call.run(self.redis)
                if outcome != "moved":
                    break
        if outcome == "missing":
            raise JobNotFoundError(job_id)
        if outcome not in {"cancelled", "cancelling"}:
            ended = outcome.removeprefix("ended:")
            raise JobStateError(f"job {job_id!r} has already ended ({ended}); nothing to cancel")
        return await self.get(job_id)

    async def retry_dead(self, job_id: str) -> JobRecord:
        """Put a failed or dead job back on its queue with its attempts reset."""
        async with redis_errors("retry the job"):
            for _ in range(_MOVED_TRIES):
                call = scripts.RETRY_DEAD_SCRIPT.call(
                    keys={
                        "job": self.keys.job(job_id),
                        "done": self.keys.done(job_id),
                        "dead": self.keys.dead,
                        "stream": await self._declared(job_id, "stream"),
                    },
                    argv={"ttl": self.job_ttl, "events": self.keys.events, "job_id": job_id},
                )
                answer = await call.run(self.redis)
                if answer != "moved":
                    break
        if isinstance(answer, list):  # the record as re-queued (a worker may take it at once)
            return record_from_hash(dict(zip(answer[::2], answer[1::2], strict=True)))
        outcome = answer
        if outcome == "missing":
            raise JobNotFoundError(job_id)
        raise JobStateError(f"job {job_id!r} is {outcome}; only failed or dead jobs can be retried")

    async def delete_dead(self, job_id: str) -> None:
        """Remove a failed or dead job for good (its dead-letter entry and its record)."""
        async with redis_errors("delete the job"):
            for _ in range(_MOVED_TRIES):
                call = scripts.DELETE_DEAD_SCRIPT.call(
                    keys={
                        "job": self.keys.job(job_id),
                        "done": self.keys.done(job_id),
                        "dead": self.keys.dead,
                        "index": self.keys.index,
                        "idem": await self._declared(job_id, "idempotency_key"),
                    },
                    argv={
                        "events": self.keys.events,
                        "idem_prefix": self.keys.idempotency_prefix,
                        "job_id": job_id,
                    },
                )
                outcome = await call.run(self.redis)
                if outcome != "moved":
                    break
        if outcome == "missing":
            raise JobNotFoundError(job_id)
        if outcome != "deleted":
            raise JobStateError(
                f"job {job_id!r} is {outcome}; only failed or dead jobs can be deleted"
            )

    async def _fields(self, job_ids: Sequence[str], field: str) -> list[str | None]:
        """``field`` of each job's record (``None`` when absent), in one round trip."""
        if not job_ids:
            return []
        async with self.redis.pipeline(False) as pipe:
            for job_id in job_ids:
                pipe.hget(self.keys.job(job_id), field)
            return [None if v is None else str(v) for v in await pipe.execute()]

    async def _declared(self, job_id: str, field: str) -> str:
        """The key a script on ``job_id``'s record will touch, read from the record's
        ``field`` (``stream``, or ``idempotency_key`` for its idempotency key) so the
        script can declare it; the script checks it still is ('moved' otherwise). A
        record without the field: a key of the job's own (declared, never touched)."""
        value = await self.redis.hget(self.keys.job(job_id), field)
        if value is None:
            return self.keys.job(job_id)
        return self.keys.idempotency(str(value)) if field == "idempotency_key" else str(value)

    async def release(self, job_ids: Sequence[str]) -> int:
        """Let Redis forget ended jobs whose runs are stored (one script call for all):
        each one's record, live log stream and index entry go; its done list keeps only
        the status (so a later :meth:`wait` answers at once) and its idempotency key
        stays until it expires. Jobs not ended (or unknown) are left alone. Afterwards
        :meth:`get`, :meth:`wait` and :meth:`payload` raise :class:`JobNotFoundError`
        for them. Answers how many were released."""
        ids = list(dict.fromkeys(job_ids))
        if not ids:
            return 0
        calls = [
            scripts.RELEASE_SCRIPT.call(
                keys={"index": self.keys.index},
                argv={},
                each=[
                    ([self.keys.job(i), self.keys.done(i), self.keys.log(i)], [i])
                    for i in ids[first : first + _ENQUEUE_CHUNK]
                ],
            )
            for first in range(0, len(ids), _ENQUEUE_CHUNK)
        ]
        async with redis_errors("release jobs"):
            answers = await scripts.run_scripts(self.redis, calls)
        return sum(int(answer) for answer in answers)

    async def reconcile_after_restore(
        self, final_status: Callable[[list[str]], Awaitable[dict[str, str]]]
    ) -> dict[str, int]:
        """Make a Redis restored from a backup agree with the run store restored with it.

        The backup takes Redis first, then the run store: a job may have ended (its run
        stored) after the Redis snapshot, and the jobs the old host's workers held show
        as running. Call this with **no worker running** (the restore starts the cluster
        with 0 workers), before scaling up. ``final_status(job_ids)`` answers the final
        run status (``succeeded``, ``failed``, ``dead``, ``cancelled``) of those of the
        given jobs that have an ended run in the run store; other statuses are ignored.

        Every job whose record has not ended (queued, scheduled, running):

        - ended in the run store: ended here with that status as a finished job shows
          (stream entry acknowledged and deleted, out of the scheduled set, done list
          filled, failed/dead in the dead letter), without a new outcome: it never runs
          again and its run is not stored twice;
        - else, held by a worker of the old host (running, or its entry delivered and
          not yet started): acknowledged and deleted, and put back on the same stream
          under a fresh entry, ``queued``, worker cleared; the interrupted attempt does
          not count (a ``max_retries=0`` job runs once more, it does not go dead);
        - else (waiting in its stream, or scheduled): left alone.

        Then the group's leftover pending entries (stale duplicates, deleted entries) are
        acknowledged and deleted, the old consumers forgotten, and the old workers'
        registrations and heartbeats removed (so none is reported lost). The outcome
        stream is left as it is: the run ingest takes over its pending entries.
        Idempotent: a second call changes nothing. Answers the counts ``requeued``,
        ``finalised`` and ``untouched`` (jobs not ended left alone).
        """
        async with redis_errors("reconcile the queue after a restore"):
            streams = await self._streams()
            ids = await self._restored_job_ids(streams)
            statuses = await self.statuses(ids)
        ended = {status.value for status in FINAL_STATUSES}
        open_ids = [i for i, st in zip(ids, statuses, strict=True) if st and st not in ended]
        async with redis_errors("reconcile the queue after a restore"):
            # Each job's stream, declared to the script (which checks the record names it).
            job_streams = dict(zip(open_ids, await self._fields(open_ids, "stream"), strict=True))
        finals: dict[str, str] = {}
        if open_ids:
            answered = await final_status(list(open_ids))
            finals = {
                job_id: str(status)
                for job_id, status in answered.items()
                if str(status) in ended and job_id in set(open_ids)
            }
        now_ms, _ = _now()
        calls = [
            scripts.RECONCILE_SCRIPT.call(
                keys={"scheduled": self.keys.scheduled, "dead": self.keys.dead},
                argv={
                    "now_ms": now_ms,
                    "ttl": self.job_ttl,
                    "group": GROUP,
                    "events": self.keys.events,
                },
                each=[
                    (
                        [self.keys.job(i), self.keys.done(i), job_streams[i] or self.keys.job(i)],
                        [i, finals.get(i, "")],
                    )
                    for i in open_ids[first : first + _ENQUEUE_CHUNK]
                ],
            )
            for first in range(0, len(open_ids), _ENQUEUE_CHUNK)
        ]
        counts = {"requeued": 0, "finalised": 0, "untouched": 0}
        async with redis_errors("reconcile the queue after a restore"):
            for answer in await scripts.run_scripts(self.redis, calls):
                for outcome in answer:
                    if outcome in counts:
                        counts[outcome] += 1
            stale = await self._drop_stale_deliveries(streams)
            workers = await self._drop_worker_registrations()
        logger.info(
            "queue reconciled after a restore: %d requeued, %d finalised, %d untouched; "
            "%d stale deliveries and %d old worker registrations removed",
            counts["requeued"],
            counts["finalised"],
            counts["untouched"],
            stale,
            workers,
        )
        return counts

    async def _scan(self, suffix_pattern: str, type_: str | None = None) -> list[str]:
        """Keys named ``{prefix}{suffix_pattern}`` (the prefix matched literally)."""
        pattern = _glob_escape(self.keys.prefix) + suffix_pattern
        return [key async for key in self.redis.scan_iter(match=pattern, count=1000, _type=type_)]

    async def _streams(self) -> list[str]:
        """Every job stream: of the pools seen, and any other under the prefix."""
        pools = cast(set[str], await self.redis.smembers(self.keys.queues))
        found = {self.keys.stream(pool, prio) for pool in pools for prio in PRIORITIES}
        found.update(await self._scan("stream:*", "stream"))
        async with self.redis.pipeline(transaction=False) as pipe:
            for stream in sorted(found):
                pipe.exists(stream)
            exists = await pipe.execute()
        return [s for s, e in zip(sorted(found), exists, strict=True) if e]

    async def _restored_job_ids(self, streams: Sequence[str]) -> list[str]:
        """The jobs that may not have ended: in the index, scheduled, or in a stream."""
        ids = dict.fromkeys(cast(list[str], await self.redis.zrange(self.keys.index, 0, -1)))
        ids.update(
            dict.fromkeys(cast(list[str], await self.redis.zrange(self.keys.scheduled, 0, -1)))
        )
        for stream in streams:
            start = "-"
            while True:
                entries = cast(
                    list[tuple[str, dict[str, str] | None]],
                    await self.redis.xrange(stream, min=start, count=1000),
                )
                for _, fields in entries:
                    if fields and fields.get("job"):
                        ids[fields["job"]] = None
                if len(entries) < 1000:
                    break
                start = "(" + entries[-1][0]
        return list(ids)

    async def _drop_stale_deliveries(self, streams: Sequence[str]) -> int:
        """Acknowledge and delete what is still pending in the group (no worker runs: it
        is a stale duplicate or a deleted entry), and forget the group's consumers."""
        dropped = 0
        for stream in streams:
            try:
                consumers = cast(
                    list[dict[str, Any]], await self.redis.xinfo_consumers(stream, GROUP)
                )
            except RedisError as exc:
                if "NOGROUP" in str(exc):
                    continue
                raise
            while True:
                pending = cast(
                    list[dict[str, Any]],
                    await self.redis.xpending_range(stream, GROUP, "-", "+", 1000),
                )
                if not pending:
                    break
                entry_ids = [str(p["message_id"]) for p in pending]
                async with self.redis.pipeline(transaction=False) as pipe:
                    pipe.xack(stream, GROUP, *entry_ids)
                    pipe.xdel(stream, *entry_ids)
                    await pipe.execute()
                dropped += len(entry_ids)
            if consumers:
                async with self.redis.pipeline(transaction=False) as pipe:
                    for consumer in consumers:
                        pipe.xgroup_delconsumer(stream, GROUP, str(consumer["name"]))
                    await pipe.execute()
        return dropped

    async def _drop_worker_registrations(self) -> int:
        """Remove every worker's heartbeat and the registry (the old host's workers)."""
        ids = cast(list[str], await self.redis.zrange(self.keys.workers, 0, -1))
        keys = {self.keys.worker(worker_id) for worker_id in ids}
        keys.update(await self._scan("worker:*"))
        await self.redis.delete(self.keys.workers, *keys)
        return len(keys)

    async def dead_letter(
        self, offset: int = 0, limit: int = 50
    ) -> tuple[list[DeadLetterEntry], int]:
        """Dead-letter entries newest first, with their records when still kept; and
        the total count."""
        offset, limit = max(0, offset), max(1, min(limit, 1000))
        async with redis_errors("read the dead letter"):
            total = int(await self.redis.xlen(self.keys.dead))
            entries = cast(
                list[tuple[str, dict[str, str] | None]],
                await self.redis.xrevrange(self.keys.dead, count=offset + limit) or [],
            )
            decoded = [(entry_id, fields or {}) for entry_id, fields in entries[offset:]]
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

    async def status(self, declared: Mapping[str, Sequence[str]] | None = None) -> QueueStatus:
        """Queue length (total, per priority, per pool), scheduled, running, dead,
        live workers, completed/failed per second and all-time totals; and the queues no
        live worker and none of the ``declared`` pools (pool → its queues) serves."""
        now = int(time.time())
        async with redis_errors("read the queue status"):
            pools = sorted(cast(set[str], await self.redis.smembers(self.keys.queues)))
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
            totals.update({k: int(v) for k, v in totals_raw.items()})
        completed = failed = 0
        for rate in rates:
            if isinstance(rate, dict):
                counts = {k: int(v) for k, v in rate.items()}
                completed += counts.get("succeeded", 0)
                failed += counts.get("failed", 0) + counts.get("dead", 0)
        from mimir.core.pools import unserved_queues  # not in a worker's imports

        served = {"": [q for worker in workers for q in worker.queues], **(declared or {})}
        return QueueStatus(
            unserved_queues=unserved_queues(served, list(by_queue)),
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
            ids = cast(list[str], await self.redis.zrange(self.keys.workers, 0, -1))
            if not ids:
                return []
            async with self.redis.pipeline(transaction=False) as pipe:
                for worker_id in ids:
                    pipe.hgetall(self.keys.worker(worker_id))
                raws = await pipe.execute()
            gone = [w for w, raw in zip(ids, raws, strict=True) if not raw]
            if gone:
                await self.redis.zrem(self.keys.workers, *gone)
        return _worker_infos(raws, time.time())

    async def live_queues(self) -> set[str]:
        """The queues the live workers serve (two short round trips)."""
        async with redis_errors("list workers"):
            ids = cast(list[str], await self.redis.zrange(self.keys.workers, 0, -1))
            if not ids:
                return set()
            async with self.redis.pipeline(transaction=False) as pipe:
                for worker_id in ids:
                    pipe.hget(self.keys.worker(worker_id), "queues")
                raws = cast(list[str | None], await pipe.execute())
        return {queue for raw in raws if raw for queue in json.loads(raw)}

    async def control_worker(self, worker_id: str, action: str) -> None:
        """Ask the live worker ``worker_id`` to ``drain`` (take no more jobs, let the
        running ones finish within its grace, exit 0: what SIGTERM does) or ``stop`` (hand
        its running jobs back to the queue at once and exit 0: a second SIGTERM). The
        worker reads the request with its next heartbeat; it is kept
        :data:`CONTROL_TTL` seconds. :class:`WorkerNotFoundError` when no live worker has
        that id; :class:`ValueError` for another action."""
        if action not in WORKER_ACTIONS:
            raise ValueError(f"unknown worker action {action!r}; use drain or stop")
        async with redis_errors(f"{action} the worker"):
            if not await self.redis.exists(self.keys.worker(worker_id)):
                raise WorkerNotFoundError(worker_id)
            # A stop asked and not yet taken is not softened into a drain (NX).
            await self.redis.set(
                self.keys.control(worker_id), action, ex=CONTROL_TTL, nx=action == "drain"
            )

    async def pool_figures(self, pools: Mapping[str, Sequence[str]]) -> dict[str, PoolFigures]:
        """Each pool's load (``pools``: pool → the queues it serves): jobs waiting and
        running in its queues, the age of the oldest waiting one, and its live workers
        (by the ``pool`` of their heartbeats): how many, busy, draining, jobs processed.
        Two pipelined round trips, whatever the number of pools and workers."""
        queues = sorted({queue for served in pools.values() for queue in served})
        streams = [(q, self.keys.stream(q, prio)) for q in queues for prio in PRIORITIES]
        async with redis_errors("read the pools' figures"):
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.execute_command("TIME")  # a cluster pipeline refuses pipe.time()
                pipe.zrange(self.keys.workers, 0, -1)
                for _, stream in streams:
                    pipe.xlen(stream)
                    pipe.xinfo_groups(stream)
                first = await pipe.execute(raise_on_error=False)
            (seconds, micros), ids = map(int, first[0]), cast(list[str], first[1])
            now_ms = seconds * 1000 + micros // 1000
            waiting: dict[str, int] = dict.fromkeys(queues, 0)
            running: dict[str, int] = dict.fromkeys(queues, 0)
            firsts: list[tuple[str, str, str]] = []  # (queue, stream, first undelivered id)
            for i, (queue, stream) in enumerate(streams):
                length, groups = first[2 + 2 * i], first[3 + 2 * i]
                length = length if isinstance(length, int) else 0
                group = next(
                    (g for g in groups if g.get("name") == GROUP), None
                ) if isinstance(groups, list) else None  # fmt: skip
                pending = int(group["pending"]) if group else 0
                waiting[queue] += max(0, length - pending)
                running[queue] += pending
                if length > pending:
                    last = str(group["last-delivered-id"]) if group else "0-0"
                    firsts.append((queue, stream, _next_entry_id(last)))
            async with self.redis.pipeline(transaction=False) as pipe:
                for _, stream, start in firsts:
                    pipe.xrange(stream, min=start, count=1)
                for worker_id in ids:
                    pipe.hgetall(self.keys.worker(worker_id))
                second = await pipe.execute(raise_on_error=False) if (firsts or ids) else []
        oldest: dict[str, int] = {}
        for (queue, _, _), entries in zip(firsts, second, strict=False):
            if isinstance(entries, list) and entries:
                at = int(str(entries[0][0]).split("-", 1)[0])
                oldest[queue] = min(at, oldest.get(queue, at))
        workers = _worker_infos(
            [raw if isinstance(raw, dict) else {} for raw in second[len(firsts) :]], now_ms / 1000
        )
        figures: dict[str, PoolFigures] = {}
        for name, served in pools.items():
            members = [w for w in workers if w.pool == name]
            ages = [oldest[q] for q in set(served) if q in oldest]
            figures[name] = PoolFigures(
                queued=sum(waiting[q] for q in set(served)),
                running=sum(running[q] for q in set(served)),
                oldest_age_s=round(max(0, now_ms - min(ages)) / 1000, 3) if ages else None,
                workers=len(members),
                busy=sum(1 for w in members if w.current_jobs),
                draining=sum(1 for w in members if w.draining),
                processed=sum(w.processed for w in members),
            )
        return figures

    async def duration_histogram(self) -> tuple[list[tuple[float, int]], float, int]:
        """Job durations: cumulative ``(upper bound, count)`` per bucket (the last is
        ``inf``), the sum of durations and the count."""
        async with redis_errors("read job durations"):
            raw = await self.redis.hgetall(self.keys.duration)
        data = dict(raw)
        buckets: list[tuple[float, int]] = []
        running = 0
        for bound in (*DURATION_BUCKETS, math.inf):
            running += int(data.get(bucket_field(bound), 0))
            buckets.append((bound, running))
        return buckets, float(data.get("sum", 0.0)), int(data.get("count", 0))

    async def worker_metrics(
        self,
    ) -> tuple[
        dict[tuple[str, ...], float],
        dict[tuple[str, ...], metrics.Histogram],
        dict[tuple[str, ...], metrics.Histogram],
    ]:
        """What the workers counted (:mod:`mimir.core.queue.metrics`), in one round trip:
        attempts by (pool, queue, outcome); job durations by (pool, queue, pipeline); step
        durations by (pool, plugin, status)."""
        async with (
            redis_errors("read the workers' metrics"),
            self.redis.pipeline(transaction=False) as pipe,
        ):
            pipe.hgetall(self.keys.metrics_jobs)
            pipe.hgetall(self.keys.metrics_job_time)
            pipe.hgetall(self.keys.metrics_step_time)
            jobs, job_time, step_time = await pipe.execute()
        return (
            metrics.decode_counter(jobs),
            metrics.decode_histograms(job_time, metrics.JOB_BUCKETS),
            metrics.decode_histograms(step_time, metrics.STEP_BUCKETS),
        )

    async def queue_figures(self) -> tuple[dict[tuple[str, str], int], dict[str, float | None]]:
        """Jobs waiting (not yet delivered) per (queue, priority), and the seconds the
        oldest waiting job of each queue has waited (``None``: nothing waits); for every
        queue enqueued to. Three short round trips."""
        async with redis_errors("read the queues' figures"):
            queues = sorted(cast(set[str], await self.redis.smembers(self.keys.queues)))
            streams = [(q, prio, self.keys.stream(q, prio)) for q in queues for prio in PRIORITIES]
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.execute_command("TIME")  # a cluster pipeline refuses pipe.time()
                for _, _, stream in streams:
                    pipe.xlen(stream)
                    pipe.xinfo_groups(stream)
                first = await pipe.execute(raise_on_error=False)
            seconds, micros = map(int, first[0])
            now_ms = seconds * 1000 + micros // 1000
            depth: dict[tuple[str, str], int] = {}
            firsts: list[tuple[str, str, str]] = []
            for i, (queue, prio, stream) in enumerate(streams):
                length, groups = first[1 + 2 * i], first[2 + 2 * i]
                length = length if isinstance(length, int) else 0
                group = next(
                    (g for g in groups if g.get("name") == GROUP), None
                ) if isinstance(groups, list) else None  # fmt: skip
                pending = int(group["pending"]) if group else 0
                depth[(queue, prio)] = max(0, length - pending)
                if length > pending:
                    last = str(group["last-delivered-id"]) if group else "0-0"
                    firsts.append((queue, stream, _next_entry_id(last)))
            entries: list[Any] = []
            if firsts:
                async with self.redis.pipeline(transaction=False) as pipe:
                    for _, stream, start in firsts:
                        pipe.xrange(stream, min=start, count=1)
                    entries = await pipe.execute(raise_on_error=False)
        oldest: dict[str, float | None] = dict.fromkeys(queues)
        for (queue, _, _), found in zip(firsts, entries, strict=False):
            if isinstance(found, list) and found:
                age = max(0, now_ms - int(str(found[0][0]).split("-", 1)[0])) / 1000
                previous = oldest[queue]
                oldest[queue] = age if previous is None else max(previous, age)
        return depth, oldest

    async def ping(self) -> None:
        """Raise :class:`QueueUnavailableError` unless Redis answers."""
        async with redis_errors("reach Redis"):
            await asyncio.wait_for(self.redis.ping(), timeout=5)

    async def aclose(self) -> None:
        await self.redis.aclose()


def _now() -> tuple[int, datetime]:
    """This moment in epoch ms, and as a datetime of that same ms."""
    now_ms = int(time.time() * 1000)
    return now_ms, datetime.fromtimestamp(now_ms / 1000, UTC)


def _worker_infos(raws: Sequence[dict[str, str]], now: float) -> list[WorkerInfo]:
    """The workers of these heartbeat hashes (empty ones left out), their ages at ``now``."""
    out = []
    for raw in raws:
        if not raw:
            continue
        data = dict(raw)
        info = WorkerInfo.model_validate(
            {
                **data,
                "queues": json.loads(data.get("queues", "[]")),
                "current_jobs": json.loads(data.get("current_jobs", "[]")),
                "job_types": json.loads(data["job_types"]) if data.get("job_types") else None,
                "draining": data.get("draining") == "1",
            }
        )
        if info.last_heartbeat is not None:
            info.heartbeat_age_s = round(max(0.0, now - info.last_heartbeat.timestamp()), 3)
        out.append(info)
    return out


def _next_entry_id(entry_id: str) -> str:
    """The smallest stream entry id after ``entry_id`` (``XRANGE``'s start, inclusive)."""
    ms, _, seq = entry_id.partition("-")
    return f"{ms}-{int(seq or 0) + 1}"


def _glob_escape(text: str) -> str:
    """``text`` matched literally in a Redis ``SCAN MATCH`` pattern."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def bucket_field(bound: float) -> str:
    """Hash field of the duration histogram bucket whose upper bound is ``bound``."""
    return "le_inf" if math.isinf(bound) else f"le_{bound:g}"


def bucket_for(seconds: float) -> str:
    """Hash field of the smallest bucket holding ``seconds``."""
    for bound in DURATION_BUCKETS:
        if seconds <= bound:
            return bucket_field(bound)
    return bucket_field(math.inf)
