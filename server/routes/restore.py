"""``POST /api/v1/admin/restore/reconcile``: settle a cluster that was just restored.

A backup snapshots Redis first and the run store a moment later, so a job can look
unfinished in the restored queue although its run was stored meanwhile; and a job that
was running when the backup was taken has no worker any more. This call, made once by
``mimir cluster restore`` before any worker starts, (and harmless when made again):

- finishes in Redis the jobs whose run the run store holds (they never run again);
- queues again the jobs that were running (at-least-once, as for a worker that died);
- rewinds a schedule whose last tick's job is in neither store (it fires again, with the
  same idempotency key, under its misfire policy);
- removes the backup lease the snapshot was taken under;
- names the triggers whose secret was left out of the archive (``POST
  /api/v1/triggers/{id}/secret`` gives them a new one).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import APIRouter, HTTPException, status
from pydantic import BaseModel, ConfigDict, Field

from mimir.core.queue import JobNotFoundError, JobQueue
from mimir.core.runstore.runs import RunStore
from mimir.core.runstore.schedules import ScheduleStore, TriggerStore
from mimir.server.backup import lock_key
from mimir.server.deps import DbDep, RedisDep, SettingsDep
from mimir.server.routes.queue import QueueDep

__all__ = ["router"]

router = APIRouter(tags=["admin"])


class ReconcileRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: When the archive's Redis snapshot was taken (unix seconds; from its manifest).
    redis_snapshot_at: float = Field(default=0.0, ge=0, strict=True, allow_inf_nan=False)


class ReconcileAnswer(BaseModel):
    requeued: int
    finalised: int
    untouched: int
    schedules_rewound: int
    triggers_needing_secret: list[str]


async def _rewind_schedules(jobs: JobQueue, runs: RunStore, schedules: ScheduleStore) -> int:
    rewound = 0
    for row in await asyncio.to_thread(schedules.list):
        if row.paused or not row.last_job_id or row.last_tick_ms is None:
            continue
        try:
            await jobs.get(row.last_job_id)
            continue
        except JobNotFoundError:
            pass
        if await asyncio.to_thread(runs.statuses, [row.last_job_id]):
            continue
        await asyncio.to_thread(schedules.rewind, row.id, row.last_tick_ms)
        rewound += 1
    return rewound


@router.post("/api/v1/admin/restore/reconcile", response_model=ReconcileAnswer)
async def reconcile(
    body: ReconcileRequest, jobs: QueueDep, db: DbDep, redis: RedisDep, settings: SettingsDep
) -> ReconcileAnswer:
    """Settle the queue and the schedules of a cluster restored from a backup (before its
    workers start: 409 while a worker that started since the snapshot is alive)."""
    if body.redis_snapshot_at > time.time():
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_ENTITY, "redis_snapshot_at is in the future"
        )
    live = [
        worker.worker_id
        for worker in await jobs.workers()
        if worker.last_heartbeat is not None
        and worker.last_heartbeat.timestamp() > body.redis_snapshot_at
    ]
    if live:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            f"{len(live)} worker(s) are running ({', '.join(live[:3])}): reconcile only a "
            "cluster restored from a backup, before its workers start",
        )
    runs = RunStore(db)

    async def final_status(job_ids: list[str]) -> dict[str, str]:
        return await asyncio.to_thread(runs.statuses, job_ids)

    counts: dict[str, Any] = await jobs.reconcile_after_restore(final_status)
    # The snapshot was taken under the source's backup lease: drop it with the old workers.
    await redis.delete(lock_key(settings))
    rewound = await _rewind_schedules(jobs, runs, ScheduleStore(db))
    redacted = await asyncio.to_thread(TriggerStore(db).redacted)
    return ReconcileAnswer(
        requeued=int(counts.get("requeued", 0)),
        finalised=int(counts.get("finalised", 0)),
        untouched=int(counts.get("untouched", 0)),
        schedules_rewound=rewound,
        triggers_needing_secret=[f"{row.spec.name} ({row.id})" for row in redacted],
    )
