"""One Redis subscription for every live view and every wait the server serves.

:class:`LiveHub` holds one pub/sub connection of its own, subscribed to the queue's
events channel, and fans each event out in the server:

- to every ``GET /api/v1/events`` subscriber (a bounded in-memory queue each), together
  with one ``stats`` event a second computed once for all of them, and the messages of
  its other channels (the autoscaler's decisions, as ``scale`` events);
- to every ``GET /api/v1/queue/jobs/{id}/wait`` waiting on that job, woken when an event
  says the job reached a final status (or was deleted); the records that waits starting
  or waking at the same moment need are read together, :data:`READ_BATCH` per round trip.

So any number of subscribers and waiters cost one Redis connection, and none of them
holds a connection of the pool the API's own calls use. Pub/sub drops what is published
while the subscription is down: after each (re)subscription, and every
:data:`RECHECK_EVERY` seconds, the hub asks Redis for the status of every job waited on.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any, cast

from redis.asyncio import Redis
from redis.exceptions import RedisError

from mimir.core.queue import (
    FINAL_STATUSES,
    JobNotFoundError,
    JobQueue,
    JobRecord,
    QueueError,
    WaitResult,
)

__all__ = ["LiveHub", "Subscriber"]

logger = logging.getLogger(__name__)

#: Seconds between ``stats`` events.
STATS_PERIOD = 1.0
#: Seconds between checks of the waited-on jobs' status (events lost in an outage).
RECHECK_EVERY = 5.0
#: Events kept for a subscriber that reads slower than they come; past this it is dropped
#: (its client reconnects and reloads).
SUBSCRIBER_BACKLOG = 10_000
#: Events handled in a row before the listener lets the woken waits and streams run.
YIELD_EVERY = 32
#: Records read in one round trip for waits that start or wake together.
READ_BATCH = 500
_FINAL = frozenset(str(status) for status in FINAL_STATUSES)


class Subscriber:
    """One live view's ``(kind, data)`` events, in order; ``overflowed`` once it fell
    :data:`SUBSCRIBER_BACKLOG` events behind (its stream should end: the client
    reconnects and reloads).

    A deque and one event rather than an :class:`asyncio.Queue`: each job event is put
    to every subscriber, and the queue's per-put bookkeeping was the largest cost of a
    burst with 200 live views."""

    __slots__ = ("_items", "_ready", "overflowed")

    def __init__(self) -> None:
        self._items: collections.deque[tuple[str, str]] = collections.deque()
        self._ready = asyncio.Event()
        self.overflowed = False

    def put(self, kind: str, data: str) -> None:
        if len(self._items) >= SUBSCRIBER_BACKLOG:
            self.overflowed = True
            return
        self._items.append((kind, data))
        self._ready.set()

    async def take(self, timeout: float, limit: int) -> list[tuple[str, str]]:
        """The events waiting (up to ``limit``), after waiting up to ``timeout`` seconds
        for one; ``[]`` if none came."""
        if not self._items:
            self._ready.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._ready.wait()
        items = self._items
        return [items.popleft() for _ in range(min(limit, len(items)))]


class LiveHub:
    """Events and waits for the whole server over one subscription.

    ``listener`` is a client of its own (its one pub/sub connection); ``jobs`` reads
    records and status on the API's pool. ``channels`` maps more channels of the same
    subscription to the event kind their messages are relayed as (the autoscaler's
    decisions: ``scale``).
    """

    def __init__(
        self, listener: Redis, jobs: JobQueue, channels: Mapping[str, str] | None = None
    ) -> None:
        self.listener = listener
        self.jobs = jobs
        self.channels = dict(channels or {})
        self._subscribers: set[Subscriber] = set()
        self._waiters: dict[str, set[asyncio.Future[None]]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._subscribed = asyncio.Event()
        #: Records asked for by waits, read together (:meth:`_get`).
        self._reads: dict[str, list[asyncio.Future[JobRecord | None]]] = {}
        self._reader: asyncio.Task[None] | None = None

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        """Subscribe and tick (on the running loop); also done on first use."""
        if self._tasks:
            return
        self._tasks = [
            asyncio.create_task(self._listen(), name="live-listen"),
            asyncio.create_task(self._tick(), name="live-tick"),
        ]

    async def aclose(self) -> None:
        tasks = [*self._tasks, *([self._reader] if self._reader is not None else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for futures in self._waiters.values():
            for future in futures:
                if not future.done():
                    future.set_result(None)
        with contextlib.suppress(Exception):
            await self.listener.aclose()

    # -- the subscription ------------------------------------------------------------

    async def _listen(self) -> None:
        delay = 0.1
        rechecks: set[asyncio.Task[None]] = set()
        handled = 0
        while True:
            pubsub = self.listener.pubsub()
            try:
                await pubsub.subscribe(self.jobs.keys.events, *self.channels)
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is None:
                        continue
                    kind = self.channels.get(str(message.get("channel")))
                    if kind is not None:
                        if message["type"] == "message":
                            self._broadcast(kind, cast(str, message["data"]))
                        continue
                    if message["type"] == "subscribe":
                        # The first subscription, or redis-py's own after a lost
                        # connection: events published meanwhile are lost; ask Redis.
                        delay = 0.1
                        self._subscribed.set()
                        rechecks.add(asyncio.create_task(self._recheck()))
                        rechecks = {task for task in rechecks if not task.done()}
                    elif message["type"] == "message":
                        self._dispatch(cast(str, message["data"]))
                        handled += 1
                        if handled % YIELD_EVERY == 0:
                            # get_message answers from its buffer without suspending: a
                            # burst of events would hold the loop until read to the end,
                            # and the waits woken early would answer only after it.
                            await asyncio.sleep(0)
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError, RuntimeError) as exc:
                # RuntimeError: redis-py's pub/sub after its connection was reset.
                self._subscribed.clear()
                logger.info("live events: Redis unavailable (%s); resubscribing", exc)
                self._broadcast("error", json.dumps({"error": f"Redis unavailable: {exc}"}))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    def _dispatch(self, data: str) -> None:
        self._broadcast("job", data)
        if not self._waiters:
            return
        try:
            event = json.loads(data)
        except ValueError:
            return
        job_id = event.get("job_id")
        if job_id in self._waiters and (event.get("status") in _FINAL or event.get("deleted")):
            self._wake(job_id)

    def _broadcast(self, kind: str, data: str) -> None:
        for subscriber in self._subscribers:
            subscriber.put(kind, data)

    def _wake(self, job_id: str) -> None:
        for future in self._waiters.get(job_id, ()):
            if not future.done():
                future.set_result(None)

    async def _recheck(self) -> None:
        """Wake the waiters of every job that has ended (or gone) per Redis."""
        job_ids = list(self._waiters)
        if not job_ids:
            return
        try:
            statuses = await self.jobs.statuses(job_ids)
        except QueueError as exc:
            logger.info("live waits: cannot check jobs (%s)", exc)
            return
        for job_id, status in zip(job_ids, statuses, strict=True):
            if status is None or status in _FINAL:
                self._wake(job_id)

    async def _tick(self) -> None:
        """One ``stats`` event a second for all subscribers; the periodic recheck."""
        last_recheck = time.monotonic()
        while True:
            await asyncio.sleep(STATS_PERIOD)
            if self._subscribers:
                try:
                    status = await self.jobs.status()
                    self._broadcast("stats", status.model_dump_json())
                except QueueError as exc:
                    self._broadcast("error", json.dumps({"error": str(exc)}))
            if time.monotonic() - last_recheck >= RECHECK_EVERY:
                last_recheck = time.monotonic()
                await self._recheck()

    # -- records for the waits ----------------------------------------------------------

    async def _get(self, job_id: str) -> JobRecord:
        """The job's record, read in one round trip with those other waits ask for at the
        same moment: a thousand waits that start or wake together take a few pooled
        connections for a few round trips, not a thousand."""
        future: asyncio.Future[JobRecord | None] = asyncio.get_running_loop().create_future()
        self._reads.setdefault(job_id, []).append(future)
        if self._reader is None or self._reader.done():
            self._reader = asyncio.create_task(self._read_batches(), name="live-reads")
        record = await future
        if record is None:
            raise JobNotFoundError(job_id)
        return record

    async def _read_batches(self) -> None:
        while self._reads:
            await asyncio.sleep(0)  # let the waits woken with this one join the batch
            job_ids = list(self._reads)[:READ_BATCH]
            batch = {job_id: self._reads.pop(job_id) for job_id in job_ids}
            try:
                records = await self.jobs.get_many(job_ids)
            except asyncio.CancelledError:  # the hub is closing
                for futures in batch.values():
                    for future in futures:
                        future.cancel()
                raise
            except Exception as exc:  # each waiting route answers it (503 for an outage)
                for futures in batch.values():
                    for future in futures:
                        if not future.done():
                            future.set_exception(exc)
                continue
            for record, futures in zip(records, batch.values(), strict=True):
                for future in futures:
                    if not future.done():
                        future.set_result(record)

    # -- what the routes use ---------------------------------------------------------

    @contextlib.asynccontextmanager
    async def subscribe(self) -> AsyncIterator[Subscriber]:
        """A subscriber to every event from now on (``(kind, data)`` from its
        :meth:`Subscriber.take`), its first the current ``stats``."""
        self.start()
        subscriber = Subscriber()
        self._subscribers.add(subscriber)
        try:
            try:
                subscriber.put("stats", (await self.jobs.status()).model_dump_json())
            except QueueError as exc:
                subscriber.put("error", json.dumps({"error": str(exc)}))
            yield subscriber
        finally:
            self._subscribers.discard(subscriber)

    async def wait(self, job_id: str, timeout: float) -> WaitResult:
        """Like :meth:`JobQueue.wait`, without holding a Redis connection meanwhile:
        woken by the job's final event (or a recheck)."""
        self.start()
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(job_id, set()).add(future)
        try:
            record = await self._get(job_id)  # after registering: no event slips by
            if record.is_final or timeout <= 0:
                return WaitResult(job=record, timed_out=not record.is_final)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(future, timeout)
            record = await self._get(job_id)
            return WaitResult(job=record, timed_out=not record.is_final)
        finally:
            waiters = self._waiters.get(job_id)
            if waiters is not None:
                waiters.discard(future)
                if not waiters:
                    del self._waiters[job_id]

    @property
    def counts(self) -> dict[str, Any]:
        """How many subscribers and waits the hub serves now."""
        return {
            "subscribers": len(self._subscribers),
            "waits": sum(len(w) for w in self._waiters.values()),
        }
