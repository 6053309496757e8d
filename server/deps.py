"""Dependencies of the route handlers, as ``Annotated`` aliases.

They are ``async`` (they never block) so that FastAPI calls them on the event loop
instead of handing each to its thread pool.

Everything long-lived is created by :func:`mimir.server.app.create_app` and its lifespan
and kept on ``app.state``; these functions hand it to handlers::

    async def handler(settings: SettingsDep, redis: RedisDep) -> ...
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from redis.asyncio import Redis
from sqlalchemy import Engine

from mimir.core.pipeline.store import PipelineStore
from mimir.core.plugins.registry import PluginRegistry
from mimir.core.queue import JobQueue
from mimir.core.settings import Settings
from mimir.server.live import LiveHub

__all__ = [
    "DbDep",
    "LiveDep",
    "RedisDep",
    "RegistryDep",
    "SettingsDep",
    "StoreDep",
    "get_db",
    "get_live",
    "get_redis",
    "get_registry",
    "get_settings",
    "get_store",
]


async def get_settings(request: Request) -> Settings:
    """The server's settings."""
    settings: Settings = request.app.state.settings
    return settings


async def get_registry(request: Request) -> PluginRegistry:
    """The plugin registry pipelines are validated and run against."""
    registry: PluginRegistry = request.app.state.registry
    return registry


async def get_store(request: Request) -> PipelineStore:
    """The pipeline files of ``MIMIR_PIPELINES_DIR`` (with their parse cache)."""
    store: PipelineStore = request.app.state.store
    return store


async def get_redis(request: Request) -> Redis:
    """The lifespan-owned Redis client (connects lazily; Redis may be unreachable)."""
    redis: Redis | None = getattr(request.app.state, "redis", None)
    if redis is None:
        raise RuntimeError("the Redis client is made by the app's lifespan, which has not run")
    return redis


async def get_live(request: Request) -> LiveHub:
    """The server's one subscription to the queue's events, shared by live views and waits."""
    live: LiveHub | None = getattr(request.app.state, "live", None)
    if live is None:
        # No lifespan (an in-process client that made only the Redis client): a hub of
        # this request's own over that client, started on first use.
        redis = await get_redis(request)
        settings = await get_settings(request)
        live = LiveHub(redis, JobQueue(redis, settings.key_prefix, settings.job_ttl))
    return live


async def get_db(request: Request) -> Engine:
    """The run store's engine (opened and migrated by the lifespan)."""
    engine: Engine | None = getattr(request.app.state, "db", None)
    if engine is None:
        raise RuntimeError("the run store is opened by the app's lifespan, which has not run")
    return engine


SettingsDep = Annotated[Settings, Depends(get_settings)]
RegistryDep = Annotated[PluginRegistry, Depends(get_registry)]
StoreDep = Annotated[PipelineStore, Depends(get_store)]
RedisDep = Annotated[Redis, Depends(get_redis)]
LiveDep = Annotated[LiveHub, Depends(get_live)]
DbDep = Annotated[Engine, Depends(get_db)]
