"""What both backends ask a cluster's API: is it ready, which workers have a heartbeat, and
the wait until a cluster that is starting is ready.

Through the console's API client (:class:`~mimir.app.services.api.ApiClient`): one client
per probe, its timeouts, its token handling. Workers are identified by a *key* each backend
chooses (a container's host name, a process id).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

from mimir.app.cluster.base import ClusterError, Progress
from mimir.app.services.api import ApiClient, ApiError

__all__ = ["ClusterProbe", "WorkerKey", "wait_until_ready"]

logger = logging.getLogger(__name__)

#: How a backend names a registered worker (from ``GET /api/v1/workers``), or ``None``
#: for a worker that is not one of its own.
WorkerKey = Callable[[dict[str, Any]], "str | None"]

#: Seconds each probe call may take.
PROBE_TIMEOUT = 3.0


class ClusterProbe:
    """The API of one cluster as cluster control sees it. ``async with`` closes it.

    Make it with :meth:`open` on an event loop: building an HTTP client loads the TLS
    certificates (tens of milliseconds), which must not stall the console's loop.
    """

    def __init__(self, api_url: str, token: str | None = None) -> None:
        self.api = ApiClient(api_url, token, timeout=PROBE_TIMEOUT)

    @classmethod
    async def open(cls, api_url: str, token: str | None = None) -> ClusterProbe:
        """A probe built in a thread."""
        return await asyncio.to_thread(cls, api_url, token)

    async def __aenter__(self) -> ClusterProbe:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.api.aclose()

    async def alive(self) -> bool:
        """The server answers ``/health`` (it may still lack Redis)."""
        try:
            await self.api.health()
            return True
        except ApiError:
            return False

    async def ready(self) -> bool:
        """The server answers ``/ready``: it runs and its Redis answers."""
        try:
            await self.api.request("GET", "/ready")
            return True
        except ApiError as exc:
            if exc.status != 404:
                return False
        # A server older than /ready: its /health says whether Redis answers.
        try:
            return (await self.api.health()).get("redis") == "ok"
        except ApiError:
            return False

    async def workers(self, key: WorkerKey) -> set[str] | None:
        """Keys of the workers with a live heartbeat, or ``None`` if the API does not answer."""
        try:
            workers = await self.api.workers()
        except (ApiError, KeyError, TypeError) as exc:
            logger.debug("no worker list from %s: %s", self.api.base_url, exc)
            return None
        keys = (key(w) for w in workers if isinstance(w, dict))
        return {k for k in keys if k}

    async def worker_records(self) -> list[dict[str, Any]] | None:
        """The workers' raw heartbeats (host name, CPU %, RSS …: the Swarm backend's stats of
        tasks on other nodes), or ``None`` if the API does not answer."""
        try:
            workers = await self.api.workers()
        except (ApiError, KeyError, TypeError) as exc:
            logger.debug("no worker list from %s: %s", self.api.base_url, exc)
            return None
        return [w for w in workers if isinstance(w, dict)]


async def wait_until_ready(
    probe: ClusterProbe,
    *,
    timeout: float,
    report: Progress,
    check_alive: Callable[[], Awaitable[None]],
    expected_workers: Callable[[], Awaitable[set[str]]],
    worker_key: WorkerKey,
    not_ready: Callable[[], Awaitable[ClusterError]],
    not_registered: Callable[[set[str]], Awaitable[ClusterError]],
    poll: float = 0.25,
) -> None:
    """Until ``/ready`` answers and every expected worker has a heartbeat.

    ``check_alive`` raises :class:`ClusterError` when a service died while starting (then
    waiting longer is pointless); on timeout, ``not_ready()`` (the API never became ready)
    or ``not_registered(missing)`` (some workers never registered) is raised.
    """
    deadline = time.monotonic() + timeout
    ready = False
    registered: set[str] = set()
    while True:
        await check_alive()
        if not ready and (ready := await probe.ready()):
            report("health", f"API ready at {probe.api.base_url}")
        expected = await expected_workers()
        if ready:
            registered = await probe.workers(worker_key) or set()
            if expected <= registered:
                report("workers", f"{len(expected)} worker(s) registered")
                return
        if time.monotonic() > deadline:
            if not ready:
                raise await not_ready()
            raise await not_registered(expected - registered)
        await asyncio.sleep(poll)
