"""The API's routers, one module per resource; :data:`ROUTERS` is the explicit list.

Each module exposes ``router: APIRouter`` whose paths include ``/api/v1/...``.
"""

from __future__ import annotations

from fastapi import APIRouter

from mimir.server.routes import (
    alerts,
    audit,
    backup,
    diagnostics,
    events,
    health,
    keys,
    kg,
    metrics,
    ontologies,
    pipelines,
    plugins,
    queue,
    restore,
    runs,
    schedules,
    twin_whatif,
    twins,
    workers,
)

__all__ = ["ROUTERS"]

#: Every router the app includes, in order.
ROUTERS: list[APIRouter] = [
    health.router,
    pipelines.router,
    plugins.router,
    queue.router,
    workers.router,
    diagnostics.router,
    events.router,
    metrics.router,
    ontologies.router,
    kg.router,
    twins.router,
    twin_whatif.router,
    runs.router,
    schedules.router,
    alerts.router,
    audit.router,
    backup.router,
    restore.router,
    keys.router,
]
