"""The worker process: drain the queue with N asyncio tasks, renew leases, heartbeat,
stop gracefully.

Loops, all on one event loop:

- **fetch**: while a slot is free, start waiting jobs (highest priority first; every
  few fetches one ``low`` and one ``normal`` job go first so nothing starves), else
  block on the streams for up to ``block`` seconds.
- **maintenance**: heartbeat into the worker registry, renew the leases of running
  jobs (a lost lease or a cancellation stops the job), take over jobs whose lease ran
  out (dead workers), move due scheduled jobs into their streams.
- **cancel listener**: running jobs asked to cancel stop at once (renewal is the
  fallback when a message is missed).
- **writer**: outcomes and progress go to Redis in batches, one round trip each; kept
  and retried while Redis is away, so nothing is lost.
- **log flusher**: every ``log_flush`` seconds the new log lines of running jobs go to
  their live log streams (``{prefix}log:{id}``), all in one round trip.

Each job runs with a :class:`~mimir.core.capture.RunCapture` set in its task's context:
the engine reports its steps to it, a handler on the root logger adds every record logged
in the job's context (plugins, the engine, this module), and Output plugins record the
files they write. What it holds becomes the outcome's ``detail`` (onto the outcome
stream with the final status); lines of a job that ends before the next flush reach
only the detail, so the live stream is always a prefix of the run's stored lines.

SIGTERM/SIGINT: take no new jobs, let running ones finish within ``grace`` seconds,
hand the rest back to the queue (others take them at once), leave the registry, exit 0.
A second SIGTERM/SIGINT hands the running jobs back at once. The same two are asked over
the API (``POST /api/v1/workers/{id}/drain`` and ``/stop``): the request waits in Redis
and comes back with the next heartbeat (no subscription of its own).

A worker belongs to one **pool** (``--pool``, see :mod:`mimir.core.pools`), named in its
heartbeat; started with ``--job-types``, it fails a job of any other type at once, without
a retry (the job was sent to the wrong pool: running it again here cannot help).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import signal
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import SpanKind
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from mimir.core import telemetry
from mimir.core.capture import RunCapture, current_capture
from mimir.core.jobs import Attempt, JobFailedError, get_job_handler
from mimir.core.logtext import printable, set_worker_id
from mimir.core.queue.connection import connect
from mimir.core.queue.consumer import Delivery, HeartbeatRefusedError, Outcome, QueueConsumer
from mimir.core.queue.errors import QueueFullError, is_auth_error, is_oom, redis_auth_message
from mimir.core.queue.metrics import WorkerMetrics, flush_args
from mimir.core.queue.models import iso, utc_now
from mimir.core.settings import Settings

__all__ = ["Worker", "WorkerConfig", "WorkerGaveUpError"]

logger = logging.getLogger(__name__)

#: Longest wait for the internal loops to finish after they were cancelled on shutdown.
_LOOP_STOP_TIMEOUT = 5.0
#: A loop still running this long after ``cancel()`` is cancelled again: on Python 3.11
#: ``asyncio.wait_for`` (which redis-py wraps around every socket write) drops a
#: cancellation that arrives just as the write completes, so one ``cancel()`` can be lost.
_RECANCEL_EVERY = 0.25
#: Longest wait before the first fetch for the cancel listener to subscribe.
_LISTEN_WAIT = 5.0

#: Errors that mean "Redis is away for now": retried with backoff.
#: Redis is away, or for now takes no writes: a primary demoted in a failover answers
#: READONLY (a client through Sentinel turns that, and MasterNotFoundError while the
#: Sentinels elect, into a ConnectionError; a plain redis:// client sees ReadOnlyError),
#: and a write fewer replicas acknowledged than MIMIR_REDIS_MIN_REPLICAS is a
#: NotReplicatedError (a ConnectionError too). All are retried with backoff.
_OUTAGE_ERRORS = (RedisConnectionError, RedisTimeoutError, ReadOnlyError, OSError)
#: Seconds between two log lines of one loop saying that a full Redis refused its writes.
_FULL_LOG_EVERY = 30.0


def _health_file_from_env() -> Path | None:
    raw = (os.environ.get("MIMIR_WORKER_HEALTH_FILE") or "").strip()
    return Path(raw) if raw else None


@dataclass
class WorkerConfig:
    """How a worker runs; the intervals are short in tests, generous in production."""

    redis_url: str
    queues: list[str] = field(default_factory=lambda: ["default"])
    concurrency: int = 5
    prefix: str = "mimir:"
    job_ttl: int = 24 * 3600
    data_dir: Path | None = None
    #: A job whose lease is not renewed for this long is taken over by another worker
    #: (``MIMIR_WORKER_LEASE``).
    lease: float = 30.0
    #: Heartbeat period; the registry entry expires after three missed beats
    #: (``MIMIR_WORKER_HEARTBEAT``).
    heartbeat: float = 2.0
    #: Seconds running jobs may take to finish after SIGTERM (``MIMIR_WORKER_GRACE``).
    grace: float = 30.0
    #: Seconds of Redis outage after which the worker gives up (exit 1)
    #: (``MIMIR_WORKER_MAX_OUTAGE``).
    max_outage: float = 300.0
    #: Longest blocking read on the streams (``MIMIR_WORKER_BLOCK``).
    block: float = 1.0
    #: Longest pause between checks for due scheduled jobs.
    schedule_poll: float = 0.2
    #: Every this many fetches, one low and one normal job go first.
    starvation_every: int = 8
    #: After this many idle seconds the worker returns freed heap memory to the system.
    trim_after: float = 2.0
    #: Seconds between writes of running jobs' new log lines to their live log streams.
    log_flush: float = 0.25
    #: The pool this worker belongs to (``MIMIR_WORKER_POOL``), shown in its heartbeat.
    pool: str = "default"
    #: Job types it runs (``MIMIR_WORKER_JOB_TYPES``); ``None``: all. A job of another
    #: type fails at once, not retried.
    job_types: list[str] | None = None
    #: Replicas a job's outcome waits for (``WAIT``) before it counts as written
    #: (``MIMIR_REDIS_MIN_REPLICAS``; 0: no wait), and how long (ms) each wait lasts.
    min_replicas: int = 0
    wait_timeout_ms: int = 2000
    #: A file touched after each successful heartbeat (``MIMIR_WORKER_HEALTH_FILE``): a
    #: container's healthcheck reads its age. ``None``: none.
    health_file: Path | None = field(default_factory=_health_file_from_env)

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> WorkerConfig:
        values: dict[str, Any] = {
            "redis_url": settings.redis_url,
            "concurrency": settings.worker_concurrency,
            "prefix": settings.key_prefix,
            "job_ttl": settings.job_ttl,
            "data_dir": settings.data_dir,
            "lease": settings.worker_lease,
            "heartbeat": settings.worker_heartbeat,
            "grace": settings.worker_grace,
            "max_outage": settings.worker_max_outage,
            "block": settings.worker_block,
            "min_replicas": settings.redis_min_replicas,
            "wait_timeout_ms": settings.redis_wait_timeout_ms,
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


class WorkerGaveUpError(RuntimeError):
    """Redis stayed away longer than ``max_outage``."""


class _RefusedJobTypeError(JobFailedError):
    """The job's type is not one this worker's pool runs: fails the job, never retried."""


def _awaiting(task: asyncio.Task[Any]) -> list[str]:
    """Where ``task`` waits: its chain of awaited coroutines, outermost first."""
    chain: list[str] = []
    awaitable: Any = task.get_coro()
    while awaitable is not None and len(chain) < 50:
        frame = getattr(awaitable, "cr_frame", None) or getattr(awaitable, "gi_frame", None)
        if frame is not None:
            chain.append(f"{frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}")
        awaitable = getattr(awaitable, "cr_await", None) or getattr(awaitable, "gi_yieldfrom", None)
    return chain


class _Full:
    """One loop's writes refused by a full Redis (``maxmemory``, noeviction). Not an
    outage: Redis answers, and the worker goes on draining the queue (its outcomes,
    lease renewals and takeovers are writes a full Redis takes), so this never stops it;
    logged at most once every :data:`_FULL_LOG_EVERY` seconds."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.logged_at: float | None = None
        self.refusals = 0

    def refused(self, exc: BaseException) -> None:
        self.refusals += 1
        now = time.monotonic()
        if self.logged_at is None or now - self.logged_at >= _FULL_LOG_EVERY:
            logger.warning(
                "Redis is full (maxmemory): %s refused (%d time(s) since the last such "
                "line: %s); the worker keeps running jobs and draining the queue",
                self.what,
                self.refusals,
                exc,
            )
            self.logged_at = now
            self.refusals = 0

    def ok(self) -> None:
        if self.logged_at is not None:
            logger.info("Redis takes writes again (%s)", self.what)
        self.logged_at = None
        self.refusals = 0


def _full(exc: BaseException) -> bool:
    """Whether ``exc`` is a full Redis's refusal (see :class:`_Full`)."""
    return isinstance(exc, QueueFullError) or is_oom(exc)


class _Reconnect:
    """Bounded, logged backoff for one loop while Redis is unavailable."""

    def __init__(self, what: str, max_outage: float) -> None:
        self.what = what
        self.max_outage = max_outage
        self.down_since: float | None = None
        self.delay = 0.1

    async def failed(self, exc: BaseException) -> None:
        now = time.monotonic()
        if self.down_since is None:
            self.down_since = now
        down = now - self.down_since
        left = self.max_outage - down
        if left <= 0:
            raise WorkerGaveUpError(
                f"Redis unavailable for {down:.0f}s ({self.what}): {exc}; giving up"
            ) from exc
        logger.warning(
            "%s: Redis unavailable (%s); retrying in %.1fs (giving up in %.0fs)",
            self.what,
            exc,
            self.delay,
            left,
        )
        await asyncio.sleep(self.delay)
        self.delay = min(self.delay * 2, 5.0) * random.uniform(0.8, 1.2)

    def ok(self) -> None:
        if self.down_since is not None:
            logger.info(
                "%s: Redis reachable again after %.1fs",
                self.what,
                time.monotonic() - self.down_since,
            )
        self.down_since = None
        self.delay = 0.1


class _JobLogHandler(logging.Handler):
    """Adds each record logged in a job's context (any logger) to the job's capture,
    as one printable line; records logged outside a job are left alone."""

    def emit(self, record: logging.LogRecord) -> None:
        capture = current_capture.get()
        if capture is None:
            return
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: keep what was written
            message = str(record.msg)
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            message = f"{message} ({type(exc).__name__}: {exc})"
        capture.line(record.levelname, printable(message), t=record.created)


@dataclass
class _Running:
    delivery: Delivery
    task: asyncio.Task[None]
    capture: RunCapture = field(default_factory=RunCapture)
    #: Why the task was cancelled: ``cancel`` (asked to), ``lost`` (lease taken over),
    #: ``shutdown`` (drain ran out of grace).
    stop_reason: str | None = None


class Worker:
    """One worker process's queue consumer; :meth:`run` until stopped."""

    def __init__(self, config: WorkerConfig) -> None:
        self.config = config
        self.hostname = socket.gethostname()
        self.worker_id = f"worker-{self.hostname}-{os.getpid()}"
        set_worker_id(self.worker_id)  # in every JSON log line of this process
        self.redis = connect(
            config.redis_url,
            socket_timeout=max(10.0, config.block + 5.0),
            max_connections=None,
            min_replicas=config.min_replicas,
            wait_timeout_ms=config.wait_timeout_ms,
        )
        self.consumer = QueueConsumer(
            self.redis,
            self.worker_id,
            config.queues,
            prefix=config.prefix,
            job_ttl=config.job_ttl,
        )
        self.started_at = utc_now()
        self.running: dict[str, _Running] = {}
        self.processed = self.succeeded = self.failed = 0
        #: Counts for Prometheus, sent with each heartbeat (:mod:`mimir.core.queue.metrics`).
        self.metrics = WorkerMetrics(config.pool)
        self._stopping = asyncio.Event()
        #: Stopping, and the fetch loop has ended: no job can reach this worker any more
        #: (what its heartbeat's ``draining`` says).
        self._taking_no_more = False
        #: Set by a second stop request: hand running jobs back now, whatever grace is left.
        self._hurry = asyncio.Event()
        #: Set when the internal loops must end (after the drain); they check it on every
        #: turn, so a cancellation lost inside redis-py cannot keep one running.
        self._closing = asyncio.Event()
        self._slot_free = asyncio.Event()
        #: Set once the cancel listener has subscribed: fetching waits for it (bounded), so
        #: a cancel published right after a job starts is not lost before the subscription.
        self._listening = asyncio.Event()
        self._pending: list[Any] = []  # progress tuples and Outcomes, in order
        self._pending_event = asyncio.Event()
        self._write_lock = asyncio.Lock()
        self._usage = _ProcessUsage()
        self._fatal: BaseException | None = None
        self._last_busy = time.monotonic()
        self._trimmed = True
        self._health_file_failed = False
        self._full_beat = _Full("heartbeat")

    # -- lifecycle -------------------------------------------------------------------

    def stop(self) -> None:
        """Begin a graceful stop (what SIGTERM does); a second call skips the grace."""
        if self._stopping.is_set():
            logger.warning("second stop request: handing back running jobs now")
            self.config.grace = 0
            self._hurry.set()
        self._stopping.set()
        self._slot_free.set()

    def _control(self, action: str) -> None:
        """Do what was asked over the API: ``drain`` is SIGTERM, ``stop`` SIGTERM twice."""
        if action == "drain":
            if not self._stopping.is_set():
                logger.info("drain requested: finishing running jobs, taking no more")
                self.stop()
        elif action == "stop":
            if not self._hurry.is_set():
                logger.info("stop requested: handing running jobs back now")
                self._stopping.set()
                self.stop()
        else:
            logger.warning("unknown request %r ignored", printable(action))

    async def run(self) -> int:
        """Serve until stopped; answers the exit code (0 after a graceful stop)."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.stop)
        log_handler = _JobLogHandler()
        logging.getLogger().addHandler(log_handler)
        try:
            return await self._serve()
        finally:
            logging.getLogger().removeHandler(log_handler)

    async def _serve(self) -> int:
        try:
            await self._connect()
        except WorkerGaveUpError as exc:
            logger.error("%s", exc)
            return 1
        logger.info(
            "%s serving queues %s with concurrency %d (pool %s, job types %s)",
            self.worker_id,
            ",".join(self.config.queues),
            self.config.concurrency,
            self.config.pool,
            ",".join(self.config.job_types) if self.config.job_types is not None else "all",
        )
        loops = [
            asyncio.create_task(self._guard(self._maintenance_loop), name="maintenance"),
            asyncio.create_task(self._guard(self._scheduler_loop), name="scheduler"),
            asyncio.create_task(self._guard(self._cancel_listener), name="cancel-listener"),
            asyncio.create_task(self._guard(self._writer_loop), name="writer"),
            asyncio.create_task(self._guard(self._log_loop), name="log-flusher"),
        ]
        fetch = asyncio.create_task(self._guard(self._fetch_loop), name="fetch")
        await self._stopping.wait()
        code = 0 if self._fatal is None else 1
        await self._drain(fetch)
        await self._stop_loops(loops)
        if self._fatal is None:
            with contextlib.suppress(Exception):  # the last counts, after the last heartbeat
                if (taken := self.metrics.take()) is not None:
                    await self.consumer.add_metrics(
                        flush_args(self.consumer.keys, self.metrics, taken)
                    )
            with contextlib.suppress(*_OUTAGE_ERRORS):
                await self.consumer.deregister()
        with contextlib.suppress(Exception):
            await self.redis.aclose()
        logger.info("%s stopped (processed %d jobs)", self.worker_id, self.processed)
        return code

    async def _stop_loops(self, loops: list[asyncio.Task[None]]) -> None:
        """Cancel the internal loops and wait (bounded) until they have finished.

        Each loop also ends on its own at its next turn once ``_closing`` is set. A loop
        that has not finished within ``_LOOP_STOP_TIMEOUT`` is logged with where it waits
        and abandoned (the process exits right after); shutdown never waits on it for good.
        """
        self._closing.set()
        self._pending_event.set()  # wakes the writer
        pending = set(loops)
        deadline = time.monotonic() + _LOOP_STOP_TIMEOUT
        while pending and (left := deadline - time.monotonic()) > 0:
            for task in pending:
                task.cancel()  # again each turn: one cancellation may be lost (see above)
            _, pending = await asyncio.wait(pending, timeout=min(left, _RECANCEL_EVERY))
        for task in pending:
            frames = "".join(f"\n  {where}" for where in _awaiting(task))
            logger.warning(
                "worker loop %s did not stop within %.0fs; abandoning it:%s",
                task.get_name(),
                _LOOP_STOP_TIMEOUT,
                frames,
            )

    async def _guard(self, loop_fn: Callable[[], Awaitable[None]]) -> None:
        """Run a loop; restart it after an unexpected error (logged, with backoff) so a
        surprise from Redis or a bug in one loop does not take the worker down. Only
        :class:`WorkerGaveUpError` (Redis away too long) stops the worker."""
        delay = 0.1
        while True:
            try:
                await loop_fn()
                return
            except asyncio.CancelledError:
                raise
            except WorkerGaveUpError as exc:
                logger.error("%s", exc)
                self._fatal = exc
                self.config.grace = 0
                self.stop()
                return
            except Exception:
                logger.exception(
                    "worker loop %s failed; restarting it in %.1fs", loop_fn.__name__, delay
                )
                if self._closing.is_set() or (
                    self._stopping.is_set() and loop_fn == self._fetch_loop
                ):
                    return
                await self._pause(delay)
                delay = min(delay * 2, 5.0)

    async def _pause(self, seconds: float) -> None:
        """Sleep ``seconds``, or less once the loops are closing."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._closing.wait()

    async def _connect(self) -> None:
        reconnect = _Reconnect("connect", self.config.max_outage)
        while True:
            try:
                await self.consumer.ensure_groups()
                # A request left for an earlier process of the same id (a container
                # restarted with its hostname and pid) is not for this one: dropped.
                try:
                    await self._heartbeat(act=False)
                except HeartbeatRefusedError as exc:
                    self._full_beat.refused(exc)  # starts anyway: it can drain
                reconnect.ok()
                return
            except (*_OUTAGE_ERRORS, RedisError) as exc:
                if is_auth_error(exc):  # no password, or a wrong one: no retry helps
                    raise WorkerGaveUpError(f"cannot connect: {redis_auth_message(exc)}") from exc
                if not isinstance(exc, _OUTAGE_ERRORS):
                    raise
                if self._stopping.is_set():
                    raise WorkerGaveUpError("stopped before Redis became reachable") from exc
                await reconnect.failed(exc)

    async def _drain(self, fetch: asyncio.Task[None]) -> None:
        logger.info(
            "stopping: no new jobs; %d running get %.0fs to finish",
            len(self.running),
            self.config.grace,
        )
        await asyncio.wait([fetch], timeout=self.config.block + 5)
        # Only now does the heartbeat say draining: the read in flight when the stop came
        # may still have delivered a job (run, like any job this worker had taken), and
        # whoever reads "draining" must be able to count on no job going to this worker
        # after it (with a pool scaled to zero, a job enqueued then ran on the worker on
        # its way out, and no wake-up was decided: CI, stop 27).
        self._taking_no_more = True
        with contextlib.suppress(*_OUTAGE_ERRORS, QueueFullError):
            await self._heartbeat()
        tasks = [r.task for r in self.running.values()]
        if tasks:
            # A second SIGTERM ends the grace early: whoever stops us may have less time
            # than our own grace (``mimir cluster down --grace N``).
            finished = asyncio.create_task(asyncio.wait(tasks))
            hurry = asyncio.create_task(self._hurry.wait())
            try:
                await asyncio.wait(
                    [finished, hurry],
                    timeout=self.config.grace,
                    return_when=asyncio.FIRST_COMPLETED,
                )
            finally:
                finished.cancel()  # the waiting, not the jobs
                hurry.cancel()
            pending = {task for task in tasks if not task.done()}
            if pending:
                logger.warning("grace over: handing %d running jobs back", len(pending))
                for running in list(self.running.values()):
                    if running.task in pending:
                        running.stop_reason = "shutdown"
                        running.task.cancel()
                await asyncio.wait(pending)
        await self._flush_remaining()

    async def _flush_remaining(self) -> None:
        """Write what is pending before exiting (Redis may be briefly away)."""
        reconnect = _Reconnect("final write", min(self.config.max_outage, 30.0))
        while self._pending:
            try:
                await self._write_batch()
            except (*_OUTAGE_ERRORS, RedisError) as exc:
                if not isinstance(exc, _OUTAGE_ERRORS) and not _full(exc):
                    raise  # a full Redis is retried here as an outage (bounded)
                try:
                    await reconnect.failed(exc)
                except WorkerGaveUpError:
                    logger.error(
                        "could not write %d outcomes; their jobs will be retried after their "
                        "lease expires",
                        len(self._pending),
                    )
                    return

    # -- fetching and running ----------------------------------------------------------

    async def _fetch_loop(self) -> None:
        reconnect = _Reconnect("fetch", self.config.max_outage)
        full = _Full("starting fetched jobs")
        with contextlib.suppress(TimeoutError):  # the lease renewal still catches cancels
            await asyncio.wait_for(self._listening.wait(), _LISTEN_WAIT)
        fetches = 0
        block_ms = max(1, int(self.config.block * 1000))
        while not self._stopping.is_set():
            free = self.config.concurrency - len(self.running)
            if free <= 0:
                self._slot_free.clear()
                await self._slot_free.wait()
                continue
            fetches += 1
            try:
                low_first = fetches % self.config.starvation_every == 0
                deliveries = await self.consumer.fetch(free, low_first=low_first)
                if not deliveries:
                    deliveries = await self.consumer.read_blocking(free, block_ms)
                    if not deliveries:
                        self._trim_if_idle()
                reconnect.ok()
            except _OUTAGE_ERRORS as exc:
                await reconnect.failed(exc)
                continue
            except RedisError as exc:
                if not _full(exc):
                    raise
                # What the blocking read delivered waits for its lease (see
                # QueueConsumer.read_blocking); meanwhile ``fetch`` reads.
                full.refused(exc)
                reconnect.ok()
                continue
            full.ok()
            for delivery in deliveries:
                self._start(delivery)

    def _trim_if_idle(self) -> None:
        if (
            not self._trimmed
            and not self.running
            and time.monotonic() - self._last_busy >= self.config.trim_after
        ):
            self._trimmed = True
            _release_memory()

    def _start(self, delivery: Delivery) -> None:
        self._trimmed = False
        run_id = delivery.payload.get("run_id")  # a twin run's own id (its JSON log lines)
        capture = RunCapture(
            job_id=delivery.job_id,
            pipeline=delivery.pipeline,
            run_id=run_id if isinstance(run_id, str) else None,
        )
        task = asyncio.create_task(self._run_job(delivery, capture), name=f"job-{delivery.job_id}")
        self.running[delivery.job_id] = _Running(delivery, task, capture)
        task.add_done_callback(self._job_task_done)

    def _job_task_done(self, task: asyncio.Task[None]) -> None:
        # A task cancelled before its first step never runs its body (no try, no finally):
        # a cancel published just as the job was fetched. Without this its entry would stay
        # in ``running`` (a slot gone for good, the lease renewed for ever) and the job
        # ``running`` in Redis with nobody running it.
        job_id = task.get_name().removeprefix("job-")
        entry = self.running.get(job_id)
        if entry is None or entry.task is not task:
            return  # the body ran and cleaned up after itself
        self._job_ended(job_id)
        outcome = self._stopped_outcome(entry.delivery, entry.stop_reason)
        if outcome is not None:
            outcome.duration = 0.0
            self._queue_write(outcome)

    def _job_ended(self, job_id: str) -> None:
        self.running.pop(job_id, None)
        self._last_busy = time.monotonic()
        self._slot_free.set()

    def _stopped_outcome(self, delivery: Delivery, reason: str | None) -> Outcome | None:
        """What to write for a job whose task was cancelled, by why it was."""
        if reason == "cancel":
            return Outcome(delivery, "cancelled", error="cancelled while running")
        if reason == "lost":
            logger.warning(
                "job %s: lease lost to another worker; dropped here", printable(delivery.job_id)
            )
            return None
        return Outcome(delivery, "requeue")

    async def _run_job(self, delivery: Delivery, capture: RunCapture) -> None:
        if not telemetry.tracing_enabled():
            await self._attempt(delivery, capture)
            return
        job_id = delivery.job_id
        if delivery.attempt == 1 and delivery.enqueued_at:
            # The wait in the queue, from the enqueue to this start (first attempt only).
            telemetry.record_span(
                "queue.wait",
                _epoch_ns(delivery.enqueued_at),
                time.time_ns(),
                parent=delivery.traceparent,
                attributes=lambda: {"mimir.queue": delivery.queue, "mimir.job.id": job_id},
            )
        # One span per attempt, each a child of the enqueue's context (the job record's
        # traceparent): a retry or a reclaim continues the same trace.
        with telemetry.span(
            f"job {delivery.pipeline or delivery.type}",
            parent=delivery.traceparent,
            kind=SpanKind.CONSUMER,
            attributes=lambda: {
                "mimir.job.id": job_id,
                "mimir.job.type": delivery.type,
                "mimir.job.attempt": delivery.attempt,
                "mimir.queue": delivery.queue,
                "mimir.pool": self.config.pool,
                "mimir.worker.id": self.worker_id,
                "mimir.pipeline": delivery.pipeline or "",
            },
        ):
            await self._attempt(delivery, capture)

    async def _attempt(self, delivery: Delivery, capture: RunCapture) -> None:
        job_id = delivery.job_id
        started = time.perf_counter()
        # This task's context only: what the job logs and writes goes to its capture.
        current_capture.set(capture)
        outcome: Outcome | None
        try:
            job_types = self.config.job_types
            if job_types is not None and delivery.type not in job_types:
                raise _RefusedJobTypeError(
                    f"worker pool '{self.config.pool}' does not run '{delivery.type}' jobs "
                    f"(it runs: {', '.join(job_types)})"
                )
            handler = get_job_handler(delivery.type)
            ctx = Attempt(
                job_id=job_id,
                attempt=delivery.attempt,
                worker_id=self.worker_id,
                data_dir=self.config.data_dir,
                report_progress=lambda step, total, name: self._queue_write(
                    (delivery, step, total, name)
                ),
            )
            if delivery.timeout:
                async with asyncio.timeout(delivery.timeout):
                    result = await handler(delivery.payload, ctx)
            else:
                result = await handler(delivery.payload, ctx)
            outcome = Outcome(delivery, "succeeded", result=result)
        except asyncio.CancelledError:
            reason = self.running[job_id].stop_reason if job_id in self.running else None
            outcome = self._stopped_outcome(delivery, reason)
        except TimeoutError:
            outcome = Outcome(delivery, "failed", error=f"timed out after {delivery.timeout:g}s")
        except _RefusedJobTypeError as exc:
            logger.warning("job %s: %s", printable(job_id), printable(str(exc)))
            outcome = Outcome(delivery, "failed", error=str(exc), final=True)
        except JobFailedError as exc:
            # retry=False: deterministic, another attempt would fail the same way.
            outcome = Outcome(
                delivery, "failed", error=str(exc), result=exc.result, final=not exc.retry
            )
        except Exception as exc:
            logger.warning(
                "job %s (%s) raised", printable(job_id), printable(delivery.type), exc_info=True
            )
            outcome = Outcome(delivery, "failed", error=f"{type(exc).__name__}: {exc}")
        finally:
            self._job_ended(job_id)
        self.metrics.steps(list(capture.steps.values()))
        if outcome is None:
            return
        outcome.duration = time.perf_counter() - started
        telemetry.record_outcome(trace.get_current_span(), outcome.kind, outcome.error)
        if _may_end(outcome):
            try:
                outcome.detail = await _detail(capture, outcome.error)
            except asyncio.CancelledError:
                # Stopped again while hashing the artifacts: the outcome goes without them.
                outcome.detail = capture.detail(outcome.error, artifacts=False)
                self._queue_write(outcome)
                raise
        self._queue_write(outcome)

    # -- writing outcomes --------------------------------------------------------------

    def _queue_write(self, item: Any) -> None:
        self._pending.append(item)
        self._pending_event.set()

    async def _write_batch(self) -> None:
        # One writer at a time: the writer loop and the final flush must not send the
        # same batch twice, nor drop what arrived meanwhile.
        async with self._write_lock:
            batch = self._pending[:]
            if not batch:
                return
            outcomes = [item for item in batch if isinstance(item, Outcome)]
            progress = [item for item in batch if not isinstance(item, Outcome)]
            await self.consumer.write(outcomes, progress)
            del self._pending[: len(batch)]
        for outcome in outcomes:
            self._account(outcome, outcome.applied != "stale")

    def _account(self, outcome: Outcome, written: bool) -> None:
        job_id = outcome.delivery.job_id
        if not written:
            if outcome.unacknowledged:  # MIMIR_REDIS_MIN_REPLICAS: not an error, most likely
                logger.info(
                    "job %s: its outcome was already written (before a replica acknowledged "
                    "it) or the job was taken over meanwhile; not written again",
                    printable(job_id),
                )
                return
            logger.warning(
                "job %s was taken over by another worker; outcome discarded", printable(job_id)
            )
            return
        delivery = outcome.delivery
        self.metrics.attempt(
            delivery.queue, outcome.applied, delivery.pipeline or delivery.type, outcome.duration
        )
        if outcome.kind == "requeue":
            logger.info("job %s handed back to the queue", printable(job_id))
            return
        self.processed += 1
        if outcome.kind == "succeeded":
            self.succeeded += 1
        elif outcome.kind == "failed":
            self.failed += 1
            retried = outcome.applied == "retry"
            # An attempt that will be retried is routine (INFO); the job's final failure
            # (it lands in the dead letter as failed) is a WARNING.
            logger.log(
                logging.INFO if retried else logging.WARNING,
                "job %s attempt %d failed (%s): %s",
                printable(job_id),
                outcome.delivery.attempt,
                "will retry" if retried else "final",
                printable(outcome.error),
                extra={"job_id": job_id, "pipeline": outcome.delivery.pipeline},
            )

    async def _writer_loop(self) -> None:
        reconnect = _Reconnect("write outcomes", self.config.max_outage)
        full = _Full("writing outcomes")
        while not self._closing.is_set():
            if not self._pending:  # after a restart by _guard, what is pending goes first
                await self._pending_event.wait()
            self._pending_event.clear()
            while self._pending and not self._closing.is_set():
                try:
                    await self._write_batch()
                    reconnect.ok()
                    full.ok()
                except _OUTAGE_ERRORS as exc:
                    await reconnect.failed(exc)
                except RedisError as exc:
                    if not _full(exc):
                        raise
                    full.refused(exc)
                    await self._pause(1.0)

    async def _log_loop(self) -> None:
        reconnect = _Reconnect("write log lines", self.config.max_outage)
        full = _Full("live log lines")
        while not self._closing.is_set():
            await self._pause(self.config.log_flush)
            try:
                await self._flush_logs()
                reconnect.ok()
            except _OUTAGE_ERRORS as exc:
                await reconnect.failed(exc)
            except RedisError as exc:
                if not _full(exc):
                    raise
                # The lines stay in the capture: written once Redis takes them, or
                # with the job's outcome (its detail) if it ends first.
                full.refused(exc)

    async def _flush_logs(self) -> None:
        """Write the running jobs' new log lines to their live log streams (one round
        trip). Under the write lock: a job's lines never follow its outcome, and a job
        that has ended is no longer in ``running``, so its last lines stay in the detail.
        While Redis is full (``maxmemory``) nothing is sent: the lines wait."""
        if self.consumer.full:
            return
        async with self._write_lock:
            batches = []
            for job_id, entry in list(self.running.items()):
                end, lines = entry.capture.unflushed()
                if lines:
                    batches.append((job_id, entry.capture, end, lines))
            if not batches:
                return
            await self.consumer.append_logs([(job_id, lines) for job_id, _, _, lines in batches])
            for _, capture, end, _ in batches:
                capture.mark_flushed(end)

    # -- maintenance -------------------------------------------------------------------

    async def _heartbeat(self, act: bool = True) -> None:
        # Redis's TIME between two readings of this host's clock: the round trip, and how
        # far this clock is off Redis's (``mimir doctor`` reports both; leases need < 1 s).
        before = time.time()
        seconds, micros = await self.redis.time()
        after = time.time()
        info = {
            "worker_id": self.worker_id,
            "hostname": self.hostname,
            "pid": os.getpid(),
            "queues": self.config.queues,
            "pool": self.config.pool,
            "job_types": self.config.job_types,
            "concurrency": self.config.concurrency,
            "started_at": iso(self.started_at),
            "current_jobs": list(self.running),
            "processed": self.processed,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "cpu_percent": self._usage.cpu_percent(),
            "memory_bytes": self._usage.rss(),
            "draining": "1" if self._taking_no_more else "0",
            "redis_rtt_ms": round((after - before) * 1000, 2),
            "clock_offset_ms": round(((before + after) / 2 - seconds - micros / 1e6) * 1000, 1),
        }
        taken = self.metrics.take()
        counts = flush_args(self.consumer.keys, self.metrics, taken) if taken else None
        try:
            control = await self.consumer.heartbeat(
                info, ttl=self.config.heartbeat * 3, metrics=counts
            )
        except HeartbeatRefusedError as exc:
            # Redis is full, yet it answered: this worker is alive (it keeps draining).
            if not exc.metrics_written:
                self.metrics.restore(taken)
            self._touch_health_file()
            if exc.control is not None and act:
                self._control(exc.control)
            raise
        except BaseException:
            self.metrics.restore(taken)  # sent with a later beat
            raise
        self._touch_health_file()
        if control is not None and act:
            self._control(control)

    def _touch_health_file(self) -> None:
        """Mark the health file fresh (its age is the time since the last heartbeat that
        reached Redis). A failure is logged once, never an outage (OSError is one)."""
        path = self.config.health_file
        if path is None:
            return
        try:
            path.touch()  # its mtime is now, whether it existed or not
        except OSError as exc:
            if not self._health_file_failed:
                self._health_file_failed = True
                logger.warning("cannot touch the health file %s: %s", path, exc)

    async def _maintenance_loop(self) -> None:
        reconnect = _Reconnect("maintenance", self.config.max_outage)
        full = _Full("lease renewal or takeover")
        tick = max(0.05, min(self.config.heartbeat, self.config.lease / 3))
        last_renew = last_reclaim = 0.0
        while not self._closing.is_set():
            try:
                now = time.monotonic()
                try:
                    await self._heartbeat()
                    self._full_beat.ok()
                except HeartbeatRefusedError as exc:
                    self._full_beat.refused(exc)  # renewals and takeovers go on
                if now - last_renew >= self.config.lease / 3:
                    await self._renew()
                    last_renew = now
                if now - last_reclaim >= self.config.lease / 2 and not self._stopping.is_set():
                    await self._reclaim()
                    last_reclaim = now
                reconnect.ok()
                self._trim_if_idle()
            except _OUTAGE_ERRORS as exc:
                await reconnect.failed(exc)
                continue
            except RedisError as exc:
                if not _full(exc):
                    raise
                full.refused(exc)
            await self._pause(tick)

    async def _renew(self) -> None:
        running = list(self.running.values())
        answers = await self.consumer.renew([r.delivery for r in running])
        for entry, answer in zip(running, answers, strict=True):
            if answer == "ok" or entry.task.done():
                continue
            if entry.stop_reason is None:
                entry.stop_reason = answer  # 'cancel' or 'lost'
                logger.info("job %s: %s; stopping it", printable(entry.delivery.job_id), answer)
            entry.task.cancel()  # again at each renewal while it runs: one may be lost

    async def _reclaim(self) -> None:
        free = self.config.concurrency - len(self.running)
        if free <= 0:
            return
        for delivery in await self.consumer.reclaim(free, self.config.lease):
            logger.info(
                "took over job %s (attempt %d) from a worker whose lease expired",
                printable(delivery.job_id),
                delivery.attempt,
            )
            self._start(delivery)

    async def _scheduler_loop(self) -> None:
        reconnect = _Reconnect("scheduler", self.config.max_outage)
        full = _Full("moving due jobs")
        while not self._closing.is_set():
            try:
                next_due = await self.consumer.move_due()
                reconnect.ok()
                full.ok()
            except _OUTAGE_ERRORS as exc:
                await reconnect.failed(exc)
                continue
            except RedisError as exc:
                if not _full(exc):
                    raise
                full.refused(exc)
                next_due = None
            pause = self.config.schedule_poll
            if next_due is not None:
                pause = min(pause, max(0.01, next_due - time.time()))
            await self._pause(pause)

    async def _cancel_listener(self) -> None:
        reconnect = _Reconnect("cancel listener", self.config.max_outage)
        while not self._closing.is_set():
            pubsub = self.redis.pubsub()
            try:
                await pubsub.subscribe(self.consumer.keys.cancel)
                reconnect.ok()
                while not self._closing.is_set():
                    message = await pubsub.get_message(timeout=1.0)
                    if message is None:
                        continue
                    if message["type"] == "subscribe":
                        # The first subscription, or redis-py's own after a lost
                        # connection: cancels published meanwhile were missed, so ask
                        # Redis about the running jobs now rather than at the next renewal.
                        self._listening.set()
                        if self.running:
                            await self._renew()
                    elif message["type"] == "message":
                        self._cancel_requested(str(message["data"]))
            except (*_OUTAGE_ERRORS, RedisError, RuntimeError) as exc:
                # RuntimeError: redis-py's pub/sub after its connection was reset.
                await reconnect.failed(exc)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    def _cancel_requested(self, job_id: str) -> None:
        entry = self.running.get(job_id)
        if entry is not None and entry.stop_reason is None and not entry.task.done():
            logger.info("job %s: cancellation requested; stopping it", printable(job_id))
            entry.stop_reason = "cancel"
            entry.task.cancel()


def _epoch_ns(moment: str) -> int:
    """Nanoseconds since the epoch of an ISO time as stored (``…Z``)."""
    return int(datetime.fromisoformat(moment.replace("Z", "+00:00")).timestamp() * 1e9)


def _may_end(outcome: Outcome) -> bool:
    """Whether writing ``outcome`` may end the job (so its detail is wanted): a failure
    with attempts left is a retry, a requeue hands the job back."""
    if outcome.kind in ("succeeded", "cancelled"):
        return True
    return outcome.kind == "failed" and (
        outcome.final or outcome.delivery.attempt > outcome.delivery.max_retries
    )


async def _detail(capture: RunCapture, stopped: str | None) -> dict[str, Any]:
    """The capture's detail; artifacts are hashed in a thread."""
    if capture.has_artifacts:
        return await asyncio.to_thread(capture.detail, stopped)
    return capture.detail(stopped)


class _ProcessUsage:
    """This process's CPU share and its RSS, read from the kernel (``/proc`` on Linux;
    psutil elsewhere), without keeping psutil loaded in a worker.

    ``os.times()`` counts in clock ticks (10 ms on Linux): over the few milliseconds
    between two heartbeats sent close together (a worker's first two) one tick reads as
    hundreds of percent. So the share is measured over at least ``min_interval`` seconds;
    a call sooner than that answers the last measured share.
    """

    def __init__(
        self,
        min_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        cpu_seconds: Callable[[], float] | None = None,
    ) -> None:
        self.min_interval = min_interval
        self._clock = clock
        self._cpu_seconds = cpu_seconds or self._process_cpu_seconds
        self._cpu = self._cpu_seconds()
        self._at = clock()
        self._percent = 0.0

    @staticmethod
    def _process_cpu_seconds() -> float:
        times = os.times()
        return times.user + times.system

    def cpu_percent(self) -> float:
        cpu, at = self._cpu_seconds(), self._clock()
        elapsed = at - self._at
        if elapsed < self.min_interval:
            return self._percent
        self._percent = round(100.0 * (cpu - self._cpu) / elapsed, 1)
        self._cpu, self._at = cpu, at
        return self._percent

    @staticmethod
    def rss() -> int:
        try:
            with open("/proc/self/statm", "rb") as statm:
                return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            import psutil

            return int(psutil.Process().memory_info().rss)


def _release_memory() -> None:
    """Collect garbage and hand freed heap pages back to the system (glibc), so an idle
    worker's RSS falls back after a burst of jobs."""
    import ctypes
    import gc

    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)


async def run_worker(config: WorkerConfig) -> int:
    """Run a worker until it is stopped; answers the exit code."""
    return await Worker(config).run()
