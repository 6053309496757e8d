"""``GET /api/v1/workers``: live workers from their heartbeats."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from mimir.core.queue import WorkerInfo
from mimir.server.routes.queue import QueueDep

__all__ = ["WorkerList", "router"]

router = APIRouter(prefix="/api/v1/workers", tags=["workers"])


class WorkerList(BaseModel):
    workers: list[WorkerInfo]


@router.get("", response_model=WorkerList)
async def list_workers(jobs: QueueDep) -> WorkerList:
    """Every worker whose heartbeat has not expired: its jobs, counters, CPU and memory."""
    return WorkerList(workers=await jobs.workers())
