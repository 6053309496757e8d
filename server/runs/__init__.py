"""The server's background work around the run store, started by the app's lifespan.

Each module exposes ``async def start(app) -> list[asyncio.Task[None]]``; the lifespan
starts them (in :data:`SERVICES` order) once the database is open and cancels their tasks
at shutdown:

- :mod:`.ingest`: consumes the queue's outcome stream into runs, acknowledging each entry
  after its commit, releases what Redis no longer needs, and prunes old runs.
- :mod:`.scheduler`: fires due schedule ticks (each tick enqueued once, by idempotency key).
- :mod:`.alerting`: evaluates alert rules and sends notifications.
- :mod:`.backups`: takes the scheduled backups (``MIMIR_BACKUP_SCHEDULE``, on the server
  that holds the alerting lease) and prunes old archives; records how backups ended.

:mod:`.audit` holds the middleware that records every mutating call, and the writer task
that stores its entries.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from mimir.server.runs import alerting, audit, backups, ingest, scheduler

__all__ = ["SERVICES", "start_services", "stop_services"]

logger = logging.getLogger(__name__)

#: The background services, started in this order.
SERVICES: list[Callable[[Any], Awaitable[list[asyncio.Task[None]]]]] = [
    ingest.start,
    scheduler.start,
    alerting.start,
    backups.start,
    audit.start,
]


async def start_services(app: Any) -> list[asyncio.Task[None]]:
    """Start every service; returns their tasks (for :func:`stop_services`)."""
    tasks: list[asyncio.Task[None]] = []
    for start in SERVICES:
        tasks.extend(await start(app))
    return tasks


async def stop_services(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel the services' tasks and wait for them to end."""
    for task in tasks:
        task.cancel()
    for task in tasks:
        try:
            await task
        except asyncio.CancelledError:
            pass
        except Exception:
            logger.exception("background task %s failed while stopping", task.get_name())
