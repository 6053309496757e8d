"""``GET /api/v1/events``: server-sent events for live views.

- ``event: job`` — a job changed (``data``: the job record without its result, with the
  record's ``version``, which grows by one with each change; ``deleted: true`` when it was
  removed from the dead letter), relayed from the queue's Redis channel;
- ``event: stats`` — the queue status (as ``GET /api/v1/queue/status``), each second;
- ``event: scale`` — the autoscaler decided to change a pool's replicas (``kind:
  decision``: ``id, time, pool, from, to, reason, figures, server``) or its scaling
  command ended (``kind: result``: ``decision`` (the decision's id), ``pool, to,
  outcome`` (``ok``/``failed``), ``error, seconds``);
- ``event: error`` — Redis is unavailable (the stream goes on and retries).

Every subscriber is served from the server's one subscription (:mod:`mimir.server.live`):
no connection of Redis per subscriber, one ``stats`` computation a second for all.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from mimir.server.deps import LiveDep
from mimir.server.live import LiveHub

__all__ = ["router"]

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1/events", tags=["events"])

#: Seconds between checks whether the client is still there while no event comes.
DISCONNECT_CHECK = 1.0


def _event(kind: str, data: str) -> str:
    return f"event: {kind}\ndata: {data}\n\n"


#: Most events sent in one write: what queued up while the stream waited to send goes out
#: together (one write and one wake-up for many events under load, not one each).
BATCH = 256
#: After a write of several events (a burst), seconds the stream lets more gather before
#: its next write: under load each subscriber gets ~10 writes a second, not one per event
#: (200 live views of a 1,000-job burst cost the server seconds of writes otherwise). A
#: lone event goes out at once.
LINGER = 0.1


async def _stream(request: Request, live: LiveHub) -> AsyncIterator[str]:
    yield "retry: 2000\n\n"
    async with live.subscribe() as subscriber:
        while not subscriber.overflowed:
            batch = await subscriber.take(DISCONNECT_CHECK, BATCH)
            if not batch:
                if await request.is_disconnected():
                    return
                continue
            yield "".join(_event(kind, data) for kind, data in batch)
            if len(batch) > 1:
                await asyncio.sleep(LINGER)


@router.get(
    "",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "A never-ending stream of `job`, `stats`, `scale` and `error` events.",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        }
    },
)
async def events(request: Request, live: LiveDep) -> StreamingResponse:
    """Job state changes, a queue-stats tick each second and the autoscaler's decisions,
    as text/event-stream."""
    return StreamingResponse(
        _stream(request, live),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
