"""Request-bound work: cancelled when its time is up or when the client goes away.

A synchronous execute may run a pipeline for minutes; nobody should pay for it once the
caller has hung up, and no single call may hold the server forever. The body has been
read by the time a handler runs, so the next ASGI ``receive`` only returns when the
connection closes (``http.disconnect``): waiting on it is how a disconnect is noticed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

from starlette.requests import Request

from mimir.core.errors import ExecutionTimeoutError

__all__ = ["ClientDisconnected", "run_while_connected"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


class ClientDisconnected(Exception):
    """The client closed the connection before the work finished (the work was cancelled)."""


async def _disconnected(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def run_while_connected(
    request: Request, work: Coroutine[Any, Any, T], *, timeout: float, what: str
) -> T:
    """Await ``work``; cancel it and raise :class:`ExecutionTimeoutError` after ``timeout``
    seconds, or :class:`ClientDisconnected` as soon as the client disconnects."""
    started = time.monotonic()
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        done, _ = await asyncio.wait(
            {task, watcher}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
    except asyncio.CancelledError:
        task.cancel()
        raise
    finally:
        watcher.cancel()
    if task in done:
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
    elapsed = time.monotonic() - started
    if watcher in done and not watcher.cancelled():
        logger.info("%s cancelled after %.1f s: the client disconnected", what, elapsed)
        raise ClientDisconnected(what)
    logger.warning("%s cancelled: still running after %g s (MIMIR_EXECUTE_TIMEOUT)", what, timeout)
    raise ExecutionTimeoutError(
        f"{what} ran longer than {timeout:g} s and was cancelled (limit MIMIR_EXECUTE_TIMEOUT; "
        "queue long runs with POST /api/v1/queue/pipelines/enqueue)"
    )
