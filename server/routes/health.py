"""``GET /health``: liveness, version and whether Redis answers (never needs a token)."""

from __future__ import annotations

import asyncio
import logging
from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel
from redis.exceptions import RedisError

from mimir.core import __version__
from mimir.server.deps import RedisDep

__all__ = ["Health", "router"]

logger = logging.getLogger(__name__)
router = APIRouter(tags=["health"])

#: Seconds a health check waits for Redis's PONG.
PING_TIMEOUT = 1.0


class Health(BaseModel):
    status: Literal["ok"]
    version: str
    redis: Literal["ok", "unavailable"]


@router.get("/health")
async def health(redis: RedisDep) -> Health:
    """The server is up; ``redis`` says whether the queue's Redis answers right now."""
    try:
        async with asyncio.timeout(PING_TIMEOUT):  # no extra task, unlike wait_for
            await redis.ping()
        state: Literal["ok", "unavailable"] = "ok"
    except (RedisError, OSError, TimeoutError) as exc:
        logger.debug("redis ping failed: %s", exc)
        state = "unavailable"
    return Health(status="ok", version=__version__, redis=state)
