"""``GET /api/v1/events``: server-sent events for live views.

- ``event: job`` — a job changed (``data``: the job record without its result, with the
  record's ``version``, which grows by one with each change; ``deleted: true`` when it was
  removed from the dead letter), relayed from the queue's Redis channel;
- ``event: stats`` — the queue status (as ``GET /api/v1/queue/status``), each second;
- ``event: error`` — Redis is unavailable (the stream goes on and retries).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from redis.exceptions import RedisError

from mimir.core.queue import JobQueue, QueueError
from mimir.server.routes.queue import QueueDep

__all__ = ["router"]

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1/events", tags=["events"])

#: Seconds between ``stats`` events.
STATS_PERIOD = 1.0


def _event(kind: str, data: str) -> str:
    return f"event: {kind}\ndata: {data}\n\n"


async def _stream(request: Request, jobs: JobQueue) -> AsyncIterator[str]:
    yield "retry: 2000\n\n"
    pubsub = None
    next_stats = 0.0
    try:
        while not await request.is_disconnected():
            now = time.monotonic()
            try:
                if pubsub is None:
                    pubsub = jobs.redis.pubsub(ignore_subscribe_messages=True)
                    await pubsub.subscribe(jobs.keys.events)
                if now >= next_stats:
                    next_stats = now + STATS_PERIOD
                    status = await jobs.status()
                    yield _event("stats", status.model_dump_json())
                message = await pubsub.get_message(timeout=max(0.01, next_stats - now))
                if message is not None:
                    data = message["data"]
                    yield _event("job", data.decode() if isinstance(data, bytes) else str(data))
            except (QueueError, RedisError, OSError) as exc:
                logger.info("event stream: Redis unavailable: %s", exc)
                yield _event("error", json.dumps({"error": f"Redis unavailable: {exc}"}))
                if pubsub is not None:
                    await pubsub.aclose()
                    pubsub = None
                next_stats = time.monotonic() + STATS_PERIOD
                await _pause(request, STATS_PERIOD)
    finally:
        if pubsub is not None:
            await pubsub.aclose()


async def _pause(request: Request, seconds: float) -> None:
    import asyncio

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not await request.is_disconnected():
        await asyncio.sleep(0.1)


@router.get(
    "",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "A never-ending stream of `job`, `stats` and `error` events.",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        }
    },
)
async def events(request: Request, jobs: QueueDep) -> StreamingResponse:
    """Job state changes and a queue-stats tick each second, as text/event-stream."""
    return StreamingResponse(
        _stream(request, jobs),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
