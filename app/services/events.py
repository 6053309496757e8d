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


Listener = Callable[[Any], None]


class LiveFeed:
    """Pushes queue stats, job changes, worker lists and the feed's mode to listeners.

    ``on_stats(dict)``, ``on_job(dict)``, ``on_workers(list)``, ``on_mode(FeedMode, str)``
    are called on the loop that runs :meth:`run` (the Qt loop in the console).
    ``on_resync(None)`` is called each time the event stream (re)connects: job changes
    made while it was away were missed, so views that keep jobs should list them again.
    """

    def __init__(
        self,
        api: ApiClient,
        *,
        poll_interval: float = 1.0,
        workers_interval: float = 2.0,
        retry_stream_after: float = 15.0,
    ) -> None:
        self.api = api
        self.poll_interval = poll_interval
        self.workers_interval = workers_interval
        self.retry_stream_after = retry_stream_after
        self.mode: FeedMode = "stopped"
        self.last_stats: dict[str, Any] | None = None
        self.last_workers: list[dict[str, Any]] = []
        self._listeners: dict[str, list[Listener]] = {
            "stats": [],
            "job": [],
            "workers": [],
            "mode": [],
            "resync": [],
        }
        self._task: asyncio.Task[None] | None = None
        self._workers_task: asyncio.Task[None] | None = None

    def subscribe(self, kind: str, listener: Listener) -> None:
        """``kind`` in stats, job, workers, mode, resync."""
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
            await asyncio.sleep(self.workers_interval)
