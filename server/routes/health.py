"""``GET /health`` (liveness) and ``GET /ready`` (readiness); neither needs a token.

``/health`` answers 200 whenever the server runs, saying whether Redis answers; ``/ready``
answers 503 while Redis does not (saying so, or that Redis wants a password the server
lacks or refuses its one), so a container health check (or a load balancer) sees a server
that cannot queue anything as unhealthy.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel
from redis.exceptions import RedisError

from mimir.core import __version__
from mimir.core.queue.errors import QueueUnavailableError, is_auth_error, redis_auth_message
from mimir.server.deps import RedisDep

__all__ = ["Health", "Readiness", "router"]

logger = logging.getLogger(__name__)
router = APIRouter(tags=["health"])

#: Seconds a health check waits for Redis's PONG.
PING_TIMEOUT = 1.0

RedisState = Literal["ok", "unavailable"]


class Health(BaseModel):
    status: Literal["ok"]
    version: str
    redis: RedisState


class Readiness(BaseModel):
    status: Literal["ready"]
    version: str
    redis: Literal["ok"]


async def _ping(redis: RedisDep) -> BaseException | None:
    """Why Redis did not answer a PING in time, or ``None`` when it did."""
    try:
        async with asyncio.timeout(PING_TIMEOUT):  # no extra task, unlike wait_for
            await redis.ping()
        return None
    except (RedisError, OSError, TimeoutError) as exc:
        logger.debug("redis ping failed: %s", exc)
        return exc


async def _redis_state(redis: RedisDep) -> RedisState:
    return "ok" if await _ping(redis) is None else "unavailable"


@router.get("/health")
async def health(redis: RedisDep) -> Health:
    """The server is up; ``redis`` says whether the queue's Redis answers right now."""
    return Health(status="ok", version=__version__, redis=await _redis_state(redis))


@router.get("/ready")
async def ready(redis: RedisDep) -> Readiness:
    """200 when the server can serve everything (Redis answers), else 503 saying why: a
    Redis that wants a password this server lacks (or refuses its one) is told apart from
    one that does not answer."""
    failure = await _ping(redis)
    if failure is not None:
        if is_auth_error(failure):  # not where the password files are: no token here
            raise QueueUnavailableError(f"not ready: {redis_auth_message(failure, where=False)}")
        raise QueueUnavailableError("not ready: the queue's Redis does not answer")
    return Readiness(status="ready", version=__version__, redis="ok")
