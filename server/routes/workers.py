"""The live workers, by pool, and what may be asked of one.

- ``GET /api/v1/workers`` — every live worker from its heartbeat, and ``pools``: the
  workers grouped by the pool in their heartbeats (how many, busy, draining, the queues
  they serve);
- ``POST /api/v1/workers/{worker_id}/drain`` — take no more jobs, let the running ones
  finish within its grace, exit 0 (what SIGTERM does) → ``202``;
- ``POST /api/v1/workers/{worker_id}/stop`` — hand the running jobs back to the queue at
  once (other workers take them), exit 0 → ``202``.

The worker does it within one heartbeat; ``404`` when no live worker has that id.
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, HTTPException, status
from pydantic import BaseModel, Field

from mimir.core.queue import WorkerInfo, WorkerNotFoundError
from mimir.server.routes.queue import QueueDep

__all__ = ["PoolWorkers", "WorkerActionAccepted", "WorkerList", "group_by_pool", "router"]

router = APIRouter(prefix="/api/v1/workers", tags=["workers"])


class PoolWorkers(BaseModel):
    """One pool's live workers, from their heartbeats."""

    #: Live workers of the pool.
    workers: int
    #: Of those, how many run at least one job.
    busy: int
    #: Of those, how many are draining (stopping; they take no more jobs).
    draining: int
    #: The queues its workers serve.
    queues: list[str]


class WorkerList(BaseModel):
    workers: list[WorkerInfo]
    #: The workers by pool (pools with no live worker are not listed).
    pools: dict[str, PoolWorkers] = Field(default_factory=dict)


class WorkerActionAccepted(BaseModel):
    """The worker will do it with its next heartbeat."""

    worker_id: str
    action: Literal["drain", "stop"]


def group_by_pool(workers: list[WorkerInfo]) -> dict[str, PoolWorkers]:
    """``workers`` grouped by their pools, pools by name."""
    pools: dict[str, PoolWorkers] = {}
    for worker in sorted(workers, key=lambda w: w.pool):
        pool = pools.setdefault(worker.pool, PoolWorkers(workers=0, busy=0, draining=0, queues=[]))
        pool.workers += 1
        pool.busy += 1 if worker.current_jobs else 0
        pool.draining += 1 if worker.draining else 0
        pool.queues = sorted({*pool.queues, *worker.queues})
    return pools


@router.get("", response_model=WorkerList)
async def list_workers(jobs: QueueDep) -> WorkerList:
    """Every worker whose heartbeat has not expired: its pool, jobs, counters, CPU and
    memory; and the workers grouped by pool."""
    workers = await jobs.workers()
    return WorkerList(workers=workers, pools=group_by_pool(workers))


async def _control(jobs: QueueDep, worker_id: str, action: str) -> WorkerActionAccepted:
    try:
        await jobs.control_worker(worker_id, action)
    except WorkerNotFoundError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
    return WorkerActionAccepted(worker_id=worker_id, action=action)  # type: ignore[arg-type]


@router.post(
    "/{worker_id}/drain",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=WorkerActionAccepted,
)
async def drain_worker(worker_id: str, jobs: QueueDep) -> WorkerActionAccepted:
    """Ask the worker to take no more jobs, let its running jobs finish within its grace
    and exit 0 (what SIGTERM does); it does so within one heartbeat, and shows
    ``draining: true`` meanwhile."""
    return await _control(jobs, worker_id, "drain")


@router.post(
    "/{worker_id}/stop",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=WorkerActionAccepted,
)
async def stop_worker(worker_id: str, jobs: QueueDep) -> WorkerActionAccepted:
    """Ask the worker to hand its running jobs back to the queue at once (other workers
    take them; the interrupted attempt does not count) and exit 0."""
    return await _control(jobs, worker_id, "stop")
