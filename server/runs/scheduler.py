"""The scheduler: every server fires the due ticks of the schedules in the run store.

Twice a second (:data:`POLL_INTERVAL`) it reads the active schedules whose next tick is
due (one indexed query), enqueues each tick's job with the idempotency key
``schedule:{id}:{tick_ms}`` and the origin ``{"kind": "schedule", "id", "tick"}``, then
moves the schedule on with a conditional UPDATE (same version, same next tick). Two
servers may both enqueue a tick: the queue answers the second with the first job, so each
tick runs once and no leader is needed. A server that dies between the enqueue and the
UPDATE leaves the tick due; the next poll (here or elsewhere) enqueues it again, to the
same job.

Ticks due longer ago than ``MISFIRE_GRACE_MS`` were missed (no scheduler ran): the
``skip`` policy drops them, ``run_once`` runs one job for all of them (keyed by the first
missed tick). With ``overlap: skip`` a tick whose previous job is still queued or running
fires nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from typing import Any

from mimir.core import telemetry
from mimir.core.jobs import pipeline_job
from mimir.core.pipeline.requests import resolve_pipeline_request
from mimir.core.queue import JobQueue, JobRecord
from mimir.core.queue.errors import QueueUnavailableError
from mimir.core.runstore.schedules import (
    MISFIRE_GRACE_MS,
    Misfire,
    Overlap,
    ScheduleRow,
    ScheduleStore,
    jitter_seconds,
    next_fire,
    tick_key,
)

__all__ = ["POLL_INTERVAL", "due_ticks", "enqueue_schedule", "fire_due", "start"]

logger = logging.getLogger(__name__)

#: Seconds between two looks at the due schedules (changes through the API show here too).
POLL_INTERVAL = 0.5
#: Statuses of a job that has not ended (the overlap policy waits for these).
_UNFINISHED = {"queued", "scheduled", "running"}
#: Seconds between two warnings about the same failing schedule.
_WARN_EVERY = 60.0


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")


async def enqueue_schedule(
    app: Any, row: ScheduleRow, tick_ms: int, *, key: str | None, delay: float = 0.0
) -> JobRecord:
    """Enqueue one run of ``row``'s pipeline for the tick at ``tick_ms`` (resolved now: a
    stored pipeline's newest version runs)."""
    settings = app.state.settings
    pipeline = await asyncio.to_thread(
        resolve_pipeline_request,
        row.spec,
        settings,
        store=app.state.store,
        registry=app.state.registry,
    )
    options = row.spec.job_options()
    if delay:
        options["delay"] = delay
    spec = pipeline_job(
        pipeline,
        row.spec.context,
        idempotency_key=key,
        origin={"kind": "schedule", "id": row.id, "tick": _iso(tick_ms)},
        **options,
    )
    jobs = JobQueue(app.state.redis, settings.key_prefix, settings.job_ttl)
    # The schedule starts the job's trace (a root span; the enqueue is its child).
    with telemetry.span(
        f"schedule {row.spec.name}",
        attributes=lambda: {"mimir.schedule.id": row.id, "mimir.schedule.tick": _iso(tick_ms)},
    ):
        return await jobs.enqueue(spec)


def due_ticks(row: ScheduleRow, now_ms: int) -> tuple[list[int], int | None, int | None]:
    """The ticks of ``row`` to fire now, the next tick after them, and the first missed
    tick (``None``: none missed)."""
    assert row.next_tick_ms is not None
    spec, created = row.spec, row.created
    cut = now_ms - MISFIRE_GRACE_MS
    fire: list[int] = []
    tick: int | None = row.next_tick_ms
    missed = tick if tick is not None and tick < cut else None
    if tick is not None and tick < cut:  # missed while no scheduler ran
        if spec.misfire is Misfire.run_once:
            fire.append(tick)
        following = next_fire(spec, datetime.fromtimestamp((cut - 1) / 1000, UTC), created)
        tick = None if following is None else round(following.timestamp() * 1000)
    while tick is not None and tick <= now_ms and len(fire) < 1000:
        fire.append(tick)
        following = next_fire(spec, datetime.fromtimestamp(tick / 1000, UTC), created)
        tick = None if following is None else round(following.timestamp() * 1000)
    return fire, tick, missed


async def _fire(app: Any, store: ScheduleStore, jobs: JobQueue, row: ScheduleRow) -> bool:
    now_ms = int(time.time() * 1000)
    fire, next_tick, missed = await asyncio.to_thread(due_ticks, row, now_ms)
    if row.spec.overlap is Overlap.skip and fire:
        fire = fire[-1:]  # one run at most, and none while the last one runs
        if row.last_job_id:
            (status,) = await jobs.statuses([row.last_job_id])
            if status in _UNFINISHED:
                fire = []
    last_job: str | None = None
    error: str | None = None
    if missed is not None:
        # Kept until a later tick fires (the schedule_missed alert rule reads it).
        error = (
            f"ticks due since {_iso(missed)} were missed (no scheduler ran); misfire "
            f"{row.spec.misfire.value}: "
            + ("one run for them" if row.spec.misfire is Misfire.run_once else "skipped")
        )
    for tick in fire:
        try:
            record = await enqueue_schedule(
                app,
                row,
                tick,
                key=tick_key(row.id, tick),
                delay=jitter_seconds(row.id, tick, row.spec.jitter),
            )
        except QueueUnavailableError:
            raise  # Redis down: the ticks stay due, tried again at the next poll
        except Exception as exc:  # the pipeline is gone or no longer valid: a missed tick
            error = f"{type(exc).__name__}: {exc}"
            continue
        last_job = record.job_id
    moved: bool = await asyncio.to_thread(
        store.advance,
        row,
        next_tick,
        last_tick_ms=fire[-1] if fire else None,
        last_job_id=last_job,
        last_error=error,
    )
    if moved and error:
        logger.warning("schedule %r: %s", row.spec.name, error)
    return moved


async def fire_due(app: Any) -> int:
    """Fire every due tick once; answers how many schedules this call moved on."""
    settings = app.state.settings
    store = ScheduleStore(app.state.db)
    jobs = JobQueue(app.state.redis, settings.key_prefix, settings.job_ttl)
    rows = await asyncio.to_thread(store.due, int(time.time() * 1000))
    moved = 0
    for row in rows:
        if await _fire(app, store, jobs, row):
            moved += 1
    return moved


async def _loop(app: Any) -> None:
    warned = 0.0
    while True:
        try:
            await fire_due(app)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if time.monotonic() - warned > _WARN_EVERY:
                warned = time.monotonic()
                logger.warning("scheduler: %s: %s (trying again)", type(exc).__name__, exc)
        await asyncio.sleep(POLL_INTERVAL)


async def start(app: Any) -> list[asyncio.Task[None]]:
    """Start the scheduler loop (cancelled at shutdown)."""
    return [asyncio.create_task(_loop(app), name="scheduler")]
