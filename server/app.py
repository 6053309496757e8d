"""The FastAPI application: :func:`create_app` wires settings, stores, routers and errors.

The lifespan owns one ``redis.asyncio.Redis`` pool built from ``settings.redis_url``.
It connects lazily, so the server starts, and runs pipelines synchronously, while Redis
is down; ``GET /health`` says whether Redis answers.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from redis.asyncio import Redis

from mimir.core import __version__, telemetry
from mimir.core.pipeline.store import PipelineStore
from mimir.core.plugins.registry import default_registry
from mimir.core.queue import JobQueue
from mimir.core.queue.connection import connect
from mimir.core.runstore.db import database_url, open_database, redact_database_url
from mimir.core.runstore.keys import KeyStore
from mimir.core.settings import Settings
from mimir.server import autoscaler
from mimir.server.auth import AuthMiddleware, KeyCache
from mimir.server.errors import install_error_handlers
from mimir.server.live import LiveHub
from mimir.server.methods import MethodsMiddleware
from mimir.server.middleware import BodySizeLimitMiddleware, RequestLogMiddleware
from mimir.server.openapi import install_openapi
from mimir.server.redaction import redact_url
from mimir.server.routes import ROUTERS
from mimir.server.routes import autoscaler as autoscaler_routes
from mimir.server.runs import start_services, stop_services
from mimir.server.runs.audit import AuditMiddleware
from mimir.server.tracing import TracingMiddleware

__all__ = ["create_app", "make_redis"]

logger = logging.getLogger(__name__)

#: Seconds to wait for a Redis connection or reply (queue calls that block pass their own).
REDIS_CONNECT_TIMEOUT = 2.0
REDIS_SOCKET_TIMEOUT = 10.0
#: Connections of the API's pool, and how long a call waits for one when all are busy.
REDIS_POOL_SIZE = 64
REDIS_POOL_TIMEOUT = 5.0


def make_redis(settings: Settings) -> Redis:
    """The server's Redis client for its own calls (the queue's :func:`connect`: replies
    as ``str``, a broken connection replaced and the command retried); no connection is
    made until the first command."""
    return connect(
        settings.redis_url,
        socket_connect_timeout=REDIS_CONNECT_TIMEOUT,
        socket_timeout=REDIS_SOCKET_TIMEOUT,
        max_connections=REDIS_POOL_SIZE,
        pool_timeout=REDIS_POOL_TIMEOUT,
        min_replicas=settings.redis_min_replicas,
        wait_timeout_ms=settings.redis_wait_timeout_ms,
    )


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    for directory in (settings.data_dir, settings.pipelines_dir):
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            logger.warning("cannot create %s: %s", directory, exc)
    app.state.redis = make_redis(settings)
    # Live views and waits share one subscription of its own (never the pool above).
    listener = connect(
        settings.redis_url,
        socket_connect_timeout=REDIS_CONNECT_TIMEOUT,
        socket_timeout=REDIS_SOCKET_TIMEOUT,
        max_connections=2,
    )
    app.state.live = LiveHub(
        listener,
        JobQueue(app.state.redis, settings.key_prefix, settings.job_ttl),
        # The autoscaler's decisions, relayed as `scale` events.
        channels={autoscaler.AutoscalerKeys(settings.key_prefix).events: "scale"},
    )
    app.state.live.start()
    # The run store: migrated before the first request; a database that cannot be opened
    # stops the server here, with the reason, rather than losing runs later.
    try:
        app.state.db = await asyncio.to_thread(open_database, settings)
    except Exception as exc:
        logger.error(
            "cannot open the run store %s: %s",
            redact_database_url(database_url(settings)),
            exc,
        )
        await app.state.live.aclose()
        await app.state.redis.aclose()
        raise
    # Whether API keys exist (auth is on with keys alone), known before the first call.
    try:
        app.state.key_cache.any_keys = await asyncio.to_thread(KeyStore(app.state.db).count) > 0
    except Exception as exc:
        logger.warning("cannot count API keys: %s", exc)
    services = await start_services(app)
    # The autoscaler's loop (it acts only on the server that holds its lease).
    services += await autoscaler.start(app)
    logger.info(
        "Mimir API %s: pipelines in %s, data in %s, redis %s, token %s",
        __version__,
        settings.pipelines_dir,
        settings.data_dir,
        redact_url(settings.redis_url),
        "required"
        if settings.api_token or app.state.key_cache.any_keys
        else "not required (no MIMIR_API_TOKEN, no API key)",
    )
    try:
        yield
    finally:
        await stop_services(services)
        await app.state.live.aclose()
        await app.state.redis.aclose()
        await asyncio.to_thread(app.state.db.dispose)


def _no_native_telemetry() -> dict[str, Any]:
    """FastAPI's own request and operation spans off, in the versions that have them: the
    request's span is ours (:class:`TracingMiddleware`, whatever the FastAPI version),
    and three more spans per request would only add cost."""
    if "telemetry" not in inspect.signature(FastAPI.__init__).parameters:
        return {}
    return {"telemetry": {"tracing": False, "operation_spans": False}}


def create_app(settings: Settings | None = None) -> FastAPI:
    """A new API application for ``settings`` (default: from the environment)."""
    settings = settings or Settings.from_env()
    registry = default_registry()
    app = FastAPI(
        title="Mimir AIP",
        version=__version__,
        description="YAML data/AI pipelines, run now or through a Redis job queue.",
        lifespan=_lifespan,
        **_no_native_telemetry(),
    )
    # Available before the lifespan runs, so in-process test clients find them too.
    app.state.settings = settings
    app.state.registry = registry
    app.state.store = PipelineStore(settings.pipelines_dir, registry)
    app.state.redis = None
    app.state.live = None
    app.state.db = None
    app.state.autoscaler = None
    app.state.key_cache = KeyCache()
    install_error_handlers(app)
    for router in (*ROUTERS, autoscaler_routes.router):
        app.include_router(router)
    install_openapi(app, token_required=bool(settings.api_token))
    app.add_middleware(MethodsMiddleware, routes=app.router.routes)
    # Inside the token check: a refused call never reaches a handler, and is not audited.
    app.add_middleware(AuditMiddleware)
    # The bootstrap token and API keys, each route's role (server/roles.py): always
    # installed, since creating the first key turns auth on.
    app.add_middleware(AuthMiddleware, settings=settings, routes=app.router.routes)
    # Pipelines and contexts, not bulk data: MIMIR_MAX_BODY_BYTES (413 beyond). The
    # ontology upload streams its documents and holds them to MIMIR_MAX_UPLOAD_BYTES.
    app.add_middleware(
        BodySizeLimitMiddleware,
        max_bytes=settings.limits.max_body_bytes,
        exempt=frozenset({("POST", "/api/v1/ontologies")}),
    )
    if settings.cors_origins:  # MIMIR_CORS_ORIGINS; none allowed by default
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type", "Accept", "X-Request-ID"],
            expose_headers=["X-Request-ID"],
            max_age=600,
        )
    app.add_middleware(RequestLogMiddleware)
    if telemetry.tracing_enabled():
        # Outermost: the request log line and everything the request does is in its span.
        app.add_middleware(TracingMiddleware)
    return app
