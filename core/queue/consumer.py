"""The worker side of the queue protocol: take jobs, renew leases, report outcomes.

A :class:`QueueConsumer` is one consumer (the worker id) in the consumer group of every
stream of the pools it serves. It knows the Redis protocol; the worker process
(:mod:`mimir.worker`) decides when to call what. Redis errors propagate as they are so
the worker can tell an outage (retry with backoff) from a bug.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError, ResponseError

from mimir.core.queue import scripts
from mimir.core.queue.client import bucket_for
from mimir.core.queue.connection import NotReplicatedError
from mimir.core.queue.errors import QueueFullError, is_oom
from mimir.core.queue.keys import GROUP, PRIORITIES, QueueKeys, require_hash_tag
from mimir.core.queue.metrics import FLUSH_SCRIPT
from mimir.core.queue.models import iso, utc_now
from mimir.core.queue.protocol import decode_field

__all__ = ["Delivery", "HeartbeatRefusedError", "Outcome", "QueueConsumer", "retry_delay"]

#: Longest backoff before a retry, in seconds.
MAX_RETRY_DELAY = 600.0


@dataclass
class Delivery:
    """A job this worker has started: what it needs to run it and to report on it."""

    stream: str
    entry_id: str
    job_id: str
    attempt: int
    type: str
    payload: dict[str, Any]
    timeout: float | None
    max_retries: int
    retry_backoff: float
    pipeline: str | None
    queue: str
    priority: str
    #: The job's W3C trace context (``None``: enqueued untraced).
    traceparent: str | None = None
    #: When the job was first enqueued (ISO text as stored), for the queue-wait span.
    enqueued_at: str | None = None

    @classmethod
    def from_fields(cls, stream: str, entry_id: str, fields: dict[str, str]) -> Delivery:
        """From what ``FETCH`` answers for one job: its stream entry and the job hash's
        delivery fields by name (``protocol.DELIVERY_FIELDS``; unset ones left out)."""
        timeout = fields.get("timeout")
        return cls(
            stream=stream,
            entry_id=entry_id,
            job_id=fields["job_id"],
            attempt=int(fields["attempts"]),
            type=fields.get("type") or "pipeline",
            payload=decode_field("payload", fields.get("payload", "")) or {},
            timeout=float(timeout) if timeout else None,
            max_retries=int(fields.get("max_retries") or 0),
            retry_backoff=float(fields.get("retry_backoff") or 1.0),
            pipeline=fields.get("pipeline"),
            queue=fields.get("queue") or "default",
            priority=fields.get("priority") or "normal",
            traceparent=fields.get("traceparent") or None,
            enqueued_at=fields.get("enqueued_at") or None,
        )


@dataclass
class Outcome:
    """How an attempt ended. ``kind``: ``succeeded``, ``failed`` (retried while
    attempts remain), ``cancelled``, or ``requeue`` (handed back unrun, e.g. on shutdown)."""

    delivery: Delivery
    kind: str
    result: Any = None
    error: str | None = None
    duration: float | None = None
    #: What the worker saw of the attempt (steps, log lines, artifacts: see
    #: ``mimir.core.capture``), put on the outcome stream when the job ends with it.
    detail: dict[str, Any] | None = None
    #: Filled in by :meth:`QueueConsumer.finish`: what was written (``retry`` for a
    #: failure that will run again), or ``stale`` when the job was no longer ours.
    applied: str = field(default="")
    #: A failure no retry can mend (a job type this worker does not run): it ends the job
    #: whatever attempts are left.
    final: bool = False
    #: An earlier write of this outcome reached the primary but not enough replicas
    #: (``NotReplicatedError``): a ``stale`` answer now may be that write itself.
    unacknowledged: bool = False


class HeartbeatRefusedError(QueueFullError):
    """Redis is full (``maxmemory``): the heartbeat's record was not written (the TTL of
    one already there was renewed). What the same round trip did is kept: ``control``,
    the request it took (``drain``, ``stop`` or ``None``), and ``metrics_written``,
    whether the counts sent with it were added."""

    def __init__(self, control: str | None, metrics_written: bool) -> None:
        self.control = control
        self.metrics_written = metrics_written
        super().__init__(
            "queue full: Redis reached its memory limit (maxmemory); this worker's "
            "heartbeat was not written (it keeps running and draining the queue)"
        )


def retry_delay(attempt: int, base: float) -> float:
    """Backoff before retry number ``attempt`` (1, 2, …): ``base·2^(attempt-1)`` ± 50 %."""
    delay = base * (2 ** max(0, attempt - 1)) * random.uniform(0.5, 1.5)
    return min(delay, MAX_RETRY_DELAY)


class QueueConsumer:
    """Consumer ``worker_id`` of the streams of ``queues`` (a ``decode_responses`` client)."""

    def __init__(
        self,
        redis: Redis,
        worker_id: str,
        queues: Sequence[str] = ("default",),
        *,
        prefix: str = "mimir:",
        job_ttl: int = 24 * 3600,
    ) -> None:
        require_hash_tag(redis, prefix)  # a Redis Cluster needs one slot per prefix
        self.redis = redis
        self.worker_id = worker_id
        self.queues = list(queues)
        self.keys = QueueKeys(prefix)
        self.job_ttl = int(job_ttl)
        #: Every stream served, highest priority first across pools.
        self.streams = [self.keys.stream(q, p) for p in PRIORITIES for q in self.queues]
        #: Redis refused a write for lack of memory since the last heartbeat it took:
        #: blocking reads wait (see :meth:`read_blocking`) and progress is not sent.
        self.full = False

    def _fetch(
        self, mode: str, count: int, streams: Sequence[tuple[str, int]], min_idle_ms: int = 0
    ) -> scripts.Call:
        now_ms = int(time.time() * 1000)
        return scripts.FETCH_SCRIPT.call(
            keys=self.keys.ending(now_ms),
            argv={
                "now_ms": now_ms,
                "ttl": self.job_ttl,
                "group": GROUP,
                "worker": self.worker_id,
                "events": self.keys.events,
                "job_prefix": self.keys.job_prefix,
                "done_prefix": self.keys.done_prefix,
                "mode": mode,
                "count": count,
                "min_idle_ms": min_idle_ms,
            },
            each=[([stream], [cap]) for stream, cap in streams],
        )

    @staticmethod
    def _deliveries(raw: Any) -> list[Delivery]:
        return [
            Delivery.from_fields(stream, entry_id, dict(zip(named[::2], named[1::2], strict=True)))
            for stream, entry_id, named in raw
        ]

    async def ensure_groups(self) -> None:
        """Create the consumer group on every stream served (from the first entry).

        A full Redis (``maxmemory``) refuses ``XGROUP CREATE`` and ``SADD`` even when the
        group or member is there already; that is no reason not to start (workers drain a
        full queue): the ``FETCH`` script creates a group still missing when it reads
        (its ``XREADGROUP``, a write Redis allows when full, comes first)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for stream in self.streams:
                pipe.xgroup_create(stream, GROUP, id="0", mkstream=True)
            pipe.sadd(self.keys.queues, *self.queues)
            results = await pipe.execute(raise_on_error=False)
        for result in results:
            if not isinstance(result, Exception) or "BUSYGROUP" in str(result):
                continue
            if is_oom(result):
                self.full = True
                continue
            raise result

    async def fetch(self, count: int, *, low_first: bool = False) -> list[Delivery]:
        """Start up to ``count`` waiting jobs, highest priority first (one round trip).

        With ``low_first`` one ``low`` and one ``normal`` job (when waiting) go ahead of
        the rest: the worker asks for that every few fetches so low work never starves.
        """
        order: list[tuple[str, int]] = []
        if low_first:
            for priority in ("low", "normal"):
                order += [(self.keys.stream(q, priority), 1) for q in self.queues]
        order += [(stream, count) for stream in self.streams]
        return self._deliveries(await self._fetch("read", count, order).run(self.redis))

    async def read_blocking(self, count: int, block_ms: int) -> list[Delivery]:
        """Wait up to ``block_ms`` for new entries on any stream served, and start them.

        The blocking read and the script that starts what it delivered go in one
        pipeline: Redis runs the script the moment the read is served, so waking costs
        one round trip, not two.
        """
        if self.full:
            # A full Redis lets the blocking read deliver but refuses the script that
            # starts what it delivered: wait, the caller's next ``fetch`` reads (``FETCH``
            # in read mode starts with its read, a write a full Redis allows).
            await asyncio.sleep(block_ms / 1000)
            return []
        pending = self._fetch("pending", count, [(stream, count) for stream in self.streams])
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xreadgroup(
                GROUP,
                self.worker_id,
                dict.fromkeys(self.streams, ">"),
                count=count,
                block=block_ms,
            )
            pending.queue_on(pipe)
            response, started = await pipe.execute(raise_on_error=False)
        if isinstance(response, ResponseError) and "NOGROUP" in str(response):
            await self.ensure_groups()
            return []
        if isinstance(response, Exception):
            raise response
        if isinstance(started, NoScriptError):
            # Redis lost its scripts (restarted): what the read delivered is in this
            # consumer's pending list, so the same call, once loaded, starts it.
            started = await pending.run(self.redis)
        elif isinstance(started, Exception):
            if is_oom(started):
                # Full: the script's first write (the job's status) was refused. What the
                # read delivered stays in this consumer's pending list and is taken over
                # once its lease runs out; until a heartbeat is written again, this
                # method waits instead of reading (``fetch`` still reads).
                self.full = True
            raise started
        return self._deliveries(started)

    async def reclaim(self, count: int, min_idle: float) -> list[Delivery]:
        """Take over and start up to ``count`` jobs whose lease (idle time in the
        pending list) ran out ``min_idle`` seconds ago; a job delivered too often goes
        to the dead letter instead."""
        call = self._fetch(
            "reclaim", count, [(stream, count) for stream in self.streams], int(min_idle * 1000)
        )
        return self._deliveries(await call.run(self.redis))

    async def renew(self, deliveries: Sequence[Delivery]) -> list[str]:
        """Renew the leases of running jobs; answers ``ok``, ``cancel`` (cancellation
        requested) or ``lost`` (another worker holds it now) for each."""
        if not deliveries:
            return []
        call = scripts.RENEW_SCRIPT.call(
            keys={},
            argv={"group": GROUP, "worker": self.worker_id},
            each=[
                ([self.keys.job(d.job_id), d.stream], [d.entry_id, d.attempt]) for d in deliveries
            ],
        )
        return [str(answer) for answer in await call.run(self.redis)]

    def _finish_entry(self, outcome: Outcome, progress: str = "") -> dict[str, Any]:
        d = outcome.delivery
        kind = outcome.kind
        due_ms = 0
        if kind == "failed" and d.attempt <= d.max_retries and not outcome.final:
            kind = "retry"
            due_ms = int((time.time() + retry_delay(d.attempt, d.retry_backoff)) * 1000)
        result = (
            json.dumps(outcome.result, separators=(",", ":"), default=str)
            if outcome.result is not None
            else ""
        )
        final = kind in {"succeeded", "failed", "cancelled"}
        detail = (
            json.dumps(outcome.detail, separators=(",", ":"), default=str)
            if final and outcome.detail is not None
            else ""
        )
        duration = outcome.duration if final and outcome.duration is not None else None
        outcome.applied = kind
        return {
            "e": d.entry_id,
            "j": d.job_id,
            "a": str(d.attempt),
            "k": kind,
            "r": result,
            "err": outcome.error or "",
            "due": due_ms,
            "b": bucket_for(duration) if duration is not None else "",
            "d": duration or 0.0,
            "p": progress,
            "x": detail,
        }

    async def write(
        self,
        outcomes: Sequence[Outcome],
        progress: Sequence[tuple[Delivery, int, int, str | None]] = (),
    ) -> None:
        """Write outcomes and progress in one round trip. A failure with attempts left
        becomes a retry after backoff. Writes are fenced: an outcome for a job another
        worker has taken over meanwhile is not written (``applied`` says ``stale``).

        A full Redis (``maxmemory``) takes outcomes (the script's first write, ``XACK``,
        is one Redis allows when full, and a script that has written may go on) but
        refuses progress alone: that progress is dropped (the next, or the outcome,
        carries it), and while :attr:`full` none is sent."""
        latest = {
            d.job_id: json.dumps({"step": step, "total": total, "name": name})
            for d, step, total, name in progress
        }
        calls: list[scripts.Call] = []
        if outcomes:
            now_ms = int(time.time() * 1000)
            entries = [self._finish_entry(o, latest.pop(o.delivery.job_id, "")) for o in outcomes]
            calls.append(
                scripts.FINISH_SCRIPT.call(
                    keys={
                        "scheduled": self.keys.scheduled,
                        "duration": self.keys.duration,
                        **self.keys.ending(now_ms),
                    },
                    argv={
                        "now_ms": now_ms,
                        "ttl": self.job_ttl,
                        "group": GROUP,
                        "worker": self.worker_id,
                        "events": self.keys.events,
                        "entries": entries,
                    },
                    each=[
                        (
                            [
                                self.keys.job(o.delivery.job_id),
                                self.keys.done(o.delivery.job_id),
                                o.delivery.stream,
                            ],
                            [],
                        )
                        for o in outcomes
                    ],
                )
            )
        by_job = {d.job_id: d for d, *_ in progress}
        if self.full:
            latest.clear()
        for job_id, text in latest.items():
            calls.append(
                scripts.PROGRESS_SCRIPT.call(
                    keys={"job": self.keys.job(job_id)},
                    argv={
                        "worker": self.worker_id,
                        "attempt": by_job[job_id].attempt,
                        "progress": text,
                        "events": self.keys.events,
                        "job_id": job_id,
                    },
                )
            )
        if not calls:
            return
        # With MIMIR_REDIS_MIN_REPLICAS an outcome counts as written once replicas have
        # it; NotReplicatedError (a connection error) makes the worker write it again.
        try:
            results = await scripts.run_scripts(
                self.redis,
                calls,
                durable="write job outcomes" if outcomes else "",
                raise_on_error=False,
            )
        except NotReplicatedError:
            for outcome in outcomes:
                outcome.unacknowledged = True
            raise
        progress_results = results[1:] if outcomes else results
        if outcomes and isinstance(results[0], Exception):
            raise results[0]
        for result in progress_results:
            if isinstance(result, Exception):
                if not is_oom(result):
                    raise result
                self.full = True  # progress refused: dropped (see above)
        if outcomes:
            for outcome, written in zip(outcomes, results[0], strict=True):
                if not int(written):
                    outcome.applied = "stale"

    async def progress(self, delivery: Delivery, step: int, total: int, name: str | None) -> None:
        """Record that step ``step`` of ``total`` is done."""
        await self.write([], [(delivery, step, total, name)])

    async def finish(self, outcomes: Sequence[Outcome]) -> None:
        """Write the outcomes (see :meth:`write`)."""
        await self.write(outcomes)

    async def append_logs(self, batches: Sequence[tuple[str, Sequence[dict[str, Any]]]]) -> None:
        """Add log lines to running jobs' live log streams (``{prefix}log:{id}``, fields
        ``t``, ``level``, ``step`` (empty when none), ``msg``), each stream kept for the
        job TTL; all in one round trip. ``batches``: (job id, lines) pairs."""
        if not batches:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id, lines in batches:
                key = self.keys.log(job_id)
                for line in lines:
                    pipe.xadd(
                        key,
                        {
                            "t": line["t"],
                            "level": line["level"],
                            "step": line.get("step") or "",
                            "msg": line["msg"],
                        },
                    )
                pipe.expire(key, self.job_ttl)
            await pipe.execute()

    async def move_due(self, limit: int = 500) -> float | None:
        """Move scheduled jobs that are due into their streams; answers the next due
        time (epoch seconds) or ``None``."""
        call = scripts.MOVE_DUE_SCRIPT.call(
            keys={"scheduled": self.keys.scheduled},
            argv={
                "now_ms": int(time.time() * 1000),
                "limit": limit,
                "job_prefix": self.keys.job_prefix,
                "events": self.keys.events,
            },
        )
        _, next_due = await call.run(self.redis)
        return float(next_due) / 1000 if next_due else None

    async def heartbeat(
        self, info: dict[str, Any], ttl: float, metrics: list[Any] | None = None
    ) -> str | None:
        """Publish this worker's heartbeat; it vanishes ``ttl`` seconds after the last.
        Answers what was asked of this worker since the last beat (``drain`` or ``stop``,
        see :meth:`JobQueue.control_worker`), or ``None``; the request is taken (deleted)
        in the same round trip, so it is answered once. ``metrics``: the worker's counts
        since the last beat, added in the same round trip (:func:`metrics.flush_args`)."""
        key = self.keys.worker(self.worker_id)
        now = utc_now()
        fields: dict[Any, Any] = {
            k: json.dumps(v) if isinstance(v, list | dict) else str(v)
            for k, v in info.items()
            if v is not None
        }
        fields["last_heartbeat"] = iso(now)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hset(key, mapping=fields)
            pipe.pexpire(key, int(ttl * 1000))
            pipe.zadd(self.keys.workers, {self.worker_id: now.timestamp()})
            if metrics:
                pipe.eval(FLUSH_SCRIPT, *metrics)
            pipe.getdel(self.keys.control(self.worker_id))
            results = await pipe.execute(raise_on_error=False)
        *written, control = results
        errors = [r for r in results if isinstance(r, Exception)]
        if errors:
            if isinstance(control, Exception) or not all(is_oom(e) for e in errors):
                raise errors[0]
            # Full (maxmemory): HSET, ZADD and the counts refused; PEXPIRE and GETDEL
            # (no new data) went through, so the request taken is answered now.
            self.full = True
            raise HeartbeatRefusedError(
                str(control) if control else None,
                metrics_written=bool(metrics) and not isinstance(written[3], Exception),
            ) from errors[0]
        self.full = False
        return str(control) if control else None

    async def add_metrics(self, metrics: list[Any]) -> None:
        """Add the worker's last counts (:func:`metrics.flush_args`) outside a heartbeat:
        on its way out."""
        await self.redis.eval(FLUSH_SCRIPT, *metrics)

    async def deregister(self) -> None:
        """Remove this worker from the registry (on a clean exit)."""
        # One transaction: between a deleted heartbeat and the registry entry's removal, the
        # alert evaluator would see a registered worker without a heartbeat, i.e. lost.
        # A full Redis refuses every command queued in a transaction: then the same
        # commands go without one, the registry entry first.
        for transaction in (True, False):
            async with self.redis.pipeline(transaction=transaction) as pipe:
                pipe.zrem(self.keys.workers, self.worker_id)
                pipe.delete(self.keys.worker(self.worker_id), self.keys.control(self.worker_id))
                for stream in self.streams:
                    pipe.xpending_range(stream, GROUP, "-", "+", 1, consumername=self.worker_id)
                try:
                    results = await pipe.execute(raise_on_error=False)
                    break
                except ResponseError as exc:
                    if not (transaction and is_oom(exc)):
                        raise
        # Forget the consumer only where it holds nothing: deleting a consumer drops its
        # pending entries, which would lose their jobs.
        idle = [s for s, r in zip(self.streams, results[2:], strict=True) if r == []]
        if idle:
            async with self.redis.pipeline(transaction=False) as pipe:
                for stream in idle:
                    pipe.xgroup_delconsumer(stream, GROUP, self.worker_id)
                await pipe.execute(raise_on_error=False)
