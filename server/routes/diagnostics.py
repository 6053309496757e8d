"""``GET /api/v1/diagnostics``: what the queue's Redis and this server's disks look like,
for ``mimir doctor`` and the console's Diagnose action (``mimir.app.services.doctor``).

The answer is 200 even when Redis does not answer (``redis_error`` says why): the doctor
needs the server's view of an outage, not a 503 in place of it.
"""

from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter
from pydantic import BaseModel
from redis.exceptions import RedisError

from mimir.core import __version__
from mimir.core.diagnostics import DiskState, QueueSnapshot, collect, disk_state
from mimir.core.queue.keys import QueueKeys
from mimir.server.deps import RedisDep, SettingsDep

__all__ = ["Diagnostics", "router"]

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/api/v1/diagnostics", tags=["diagnostics"])

#: Seconds the whole Redis read may take.
COLLECT_TIMEOUT = 5.0


class Diagnostics(BaseModel):
    version: str
    #: Free space under the server's data and pipelines directories.
    disks: list[DiskState]
    #: The queue's state as Redis holds it; ``None`` when Redis did not answer.
    queue: QueueSnapshot | None = None
    redis_error: str | None = None


@router.get("", response_model=Diagnostics)
async def diagnostics(settings: SettingsDep, redis: RedisDep) -> Diagnostics:
    """Redis's memory, persistence and round trip, workers' heartbeats (with their own
    Redis round trip and clock offset), each stream's lag, pending entries and oldest
    waiting job, throughput, the dead letter, and free disk space."""
    disks = [
        d
        for d in await asyncio.to_thread(
            lambda: [disk_state(str(p)) for p in (settings.data_dir, settings.pipelines_dir)]
        )
        if d is not None
    ]
    try:
        async with asyncio.timeout(COLLECT_TIMEOUT):
            queue = await collect(redis, QueueKeys(settings.key_prefix))
    except (RedisError, OSError, TimeoutError) as exc:
        logger.info("diagnostics: Redis did not answer: %s", exc)
        return Diagnostics(
            version=__version__, disks=disks, redis_error=str(exc) or type(exc).__name__
        )
    return Diagnostics(version=__version__, disks=disks, queue=queue)
