"""Live data for the console: a server-sent-events decoder and a feed that falls back to polling.

:class:`LiveFeed` consumes ``GET /api/v1/events`` (``event: job`` on each state change,
``event: stats`` each second). When the server has no event stream, or it breaks, the feed
polls ``/api/v1/queue/status`` once a second instead and tries the stream again later.
Workers are polled every ``workers_interval`` seconds (heartbeats are not in the stream).
Listeners are plain callables, so the feed is testable without Qt.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from mimir.app.services.api import ApiClient, ApiError

__all__ = ["FeedMode", "LiveFeed", "ServerEvent", "SseDecoder", "iter_events"]

logger = logging.getLogger(__name__)

FeedMode = Literal["events", "polling", "offline", "stopped"]


@dataclass(frozen=True)
class ServerEvent:
    """One server-sent event; ``data`` is the joined ``data:`` lines."""

    event: str = "message"
    data: str = ""
    id: str | None = None

    def json(self) -> Any:
        return json.loads(self.data) if self.data else None


@dataclass
class SseDecoder:
    """Incremental decoder of the ``text/event-stream`` format (WHATWG), fed line by line."""

    _event: str = ""
    _data: list[str] = field(default_factory=list)
    _id: str | None = None

    def feed(self, line: str) -> ServerEvent | None:
        """Feed one line (without its newline); the completed event at a blank line."""
        line = line.rstrip("\r")
        if not line:
            if not self._data and not self._event:
                return None
            event = ServerEvent(self._event or "message", "\n".join(self._data), self._id)
            self._event, self._data = "", []
            return event
        if line.startswith(":"):  # a comment / keep-alive
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id":
            self._id = value
        return None


async def iter_events(lines: AsyncIterator[str]) -> AsyncIterator[ServerEvent]:
    """Events decoded from an async iterator of lines."""
    decoder = SseDecoder()
    async for line in lines:
        event = decoder.feed(line)
        if event is not None:
            yield event


Listener = Callable[[Any], object]


class LiveFeed:
    """Pushes queue stats, job changes, worker lists and the feed's mode to listeners.

    ``on_stats(dict)``, ``on_job(dict)``, ``on_workers(list)``, ``on_mode(FeedMode, str)``
    are called on the loop that runs :meth:`run` (the Qt loop in the console).
    ``on_resync(None)`` is called each time the event stream (re)connects: job changes
    made while it was away were missed, so views that keep jobs should list them again.

    Worker pools: ``on_pools(dict)`` with ``GET /api/v1/pools`` (polled with the workers),
    ``on_scale(dict)`` with each autoscaler decision (the stream's ``scale`` events), and
    ``on_autoscaler(dict)`` with ``GET /api/v1/autoscaler`` (its last decisions among it),
    read when the stream connects and every ``autoscaler_interval`` seconds, so decisions
    made while the stream was away are not missed. A server without these endpoints
    (404) is asked again only after ``retry_missing_after`` seconds.
    """

    def __init__(
        self,
        api: ApiClient,
        *,
        poll_interval: float = 1.0,
        workers_interval: float = 2.0,
        retry_stream_after: float = 15.0,
        autoscaler_interval: float = 15.0,
        retry_missing_after: float = 60.0,
    ) -> None:
        self.api = api
        self.poll_interval = poll_interval
        self.workers_interval = workers_interval
        self.retry_stream_after = retry_stream_after
        self.autoscaler_interval = autoscaler_interval
        self.retry_missing_after = retry_missing_after
        self.mode: FeedMode = "stopped"
        self.last_stats: dict[str, Any] | None = None
        self.last_workers: list[dict[str, Any]] = []
        self.last_pools: dict[str, dict[str, Any]] | None = None
        self.last_autoscaler: dict[str, Any] | None = None
        #: Endpoint → monotonic time before which it is not asked again (it answered 404).
        self._missing_until: dict[str, float] = {}
        self._autoscaler_read_at = 0.0
        self._autoscaler_asked = self._autoscaler_delivered = 0
        self._listeners: dict[str, list[Listener]] = {
            "stats": [],
            "job": [],
            "workers": [],
            "mode": [],
            "resync": [],
            "pools": [],
            "scale": [],
            "autoscaler": [],
        }
        self._task: asyncio.Task[None] | None = None
        self._workers_task: asyncio.Task[None] | None = None

    def subscribe(self, kind: str, listener: Listener) -> None:
        """``kind`` in stats, job, workers, mode, resync, pools, scale, autoscaler."""
        self._listeners[kind].append(listener)

    def _emit(self, kind: str, value: Any) -> None:
        for listener in list(self._listeners[kind]):
            try:
                listener(value)
            except Exception:  # a broken view must not stop the feed
                logger.exception("%s listener failed", kind)

    def _set_mode(self, mode: FeedMode, message: str = "") -> None:
        if mode != self.mode:
            logger.info("live feed: %s %s", mode, message)
        self.mode = mode
        self._emit("mode", (mode, message))

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Start the feed's tasks on the running loop (idempotent)."""
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self.run())
        if self._workers_task is None or self._workers_task.done():
            self._workers_task = asyncio.ensure_future(self._poll_workers())

    async def stop(self) -> None:
        for task in (self._task, self._workers_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._task = self._workers_task = None
        self._set_mode("stopped")

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    # ---------------------------------------------------------------- the loops

    async def run(self) -> None:
        """Stream events; on failure poll until it is time to try the stream again."""
        while True:
            try:
                await self._stream()
            except ApiError as exc:
                if exc.status == 0:
                    self._set_mode("offline", str(exc))
                else:
                    self._set_mode("polling", f"no event stream ({exc})")
            await self._poll_for(self.retry_stream_after)

    async def _stream(self) -> None:
        connected = False
        async for event in iter_events(self.api.stream_lines("/api/v1/events")):
            if not connected:
                connected = True
                if self.mode != "events":
                    self._set_mode("events", self.api.base_url)
                self._emit("resync", None)
                self._autoscaler_read_at = 0.0  # decisions made meanwhile: read them
            try:
                payload = event.json()
            except ValueError:
                logger.warning("undecodable %s event: %.200s", event.event, event.data)
                continue
            if event.event == "stats" and isinstance(payload, dict):
                self.last_stats = payload
                self._emit("stats", payload)
            elif event.event == "job" and isinstance(payload, dict):
                self._emit("job", payload)
            elif event.event == "scale" and isinstance(payload, dict):
                self._emit("scale", payload)
                # The pools' state changed (a command started or ended): read it soon.
                self._autoscaler_read_at = 0.0
        raise ApiError("the event stream ended", 0)

    async def _poll_for(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            started = time.monotonic()
            try:
                stats = await self.api.queue_status()
            except ApiError as exc:
                self._set_mode("offline", str(exc))
            else:
                if self.mode == "offline":
                    return  # the server is back: try its event stream first
                if self.mode != "polling":
                    self._set_mode("polling", self.api.base_url)
                self.last_stats = stats
                self._emit("stats", stats)
            await asyncio.sleep(max(0.05, self.poll_interval - (time.monotonic() - started)))

    async def _poll_workers(self) -> None:
        while True:
            try:
                self.last_workers = await self.api.workers()
                self._emit("workers", self.last_workers)
            except ApiError as exc:
                logger.debug("workers poll failed: %s", exc)
            await self.read_pools()
            await asyncio.sleep(self.workers_interval)

    def forget_endpoints(self) -> None:
        """Ask every endpoint again (another server: it may have what the last lacked)."""
        self._missing_until.clear()
        self._autoscaler_read_at = 0.0
        self.last_pools = self.last_autoscaler = None

    async def _optional(self, name: str, call: Callable[[], Any]) -> Any:
        """``await call()``, or None when it fails; a 404 (an older server) is not asked
        again for ``retry_missing_after`` seconds."""
        if time.monotonic() < self._missing_until.get(name, 0.0):
            return None
        try:
            return await call()
        except ApiError as exc:
            if exc.status in (404, 405):
                self._missing_until[name] = time.monotonic() + self.retry_missing_after
            logger.debug("%s poll failed: %s", name, exc)
            return None

    async def read_pools(self) -> None:
        """``GET /api/v1/pools`` now, and the autoscaler when it is time to."""
        pools = await self._optional("pools", self.api.pools)
        if pools is not None:
            self.last_pools = pools
            self._emit("pools", pools)
        if time.monotonic() - self._autoscaler_read_at >= self.autoscaler_interval:
            await self.read_autoscaler()

    async def read_autoscaler(self) -> dict[str, Any] | None:
        """``GET /api/v1/autoscaler`` now (its listeners get it); None when unavailable.
        An answer to an older request than one already delivered is dropped (two reads may
        overlap: the periodic one and one after a policy was saved)."""
        self._autoscaler_read_at = time.monotonic()
        self._autoscaler_asked += 1
        asked = self._autoscaler_asked
        answer = await self._optional("autoscaler", self.api.autoscaler)
        if asked < self._autoscaler_delivered:
            return None
        if isinstance(answer, dict):
            self._autoscaler_delivered = asked
            self.last_autoscaler = answer
            self._emit("autoscaler", answer)
            return answer
        return None
