"""Fixtures for the queue client tests: a real redis-server and a fresh queue on it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterator
from typing import TypeVar

import pytest

from mimir.core.queue import JobQueue, QueueConsumer, connect
from tests.helpers import RedisServer

T = TypeVar("T")


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """One event loop for the whole test (the Redis clients are bound to it)."""
    event_loop = asyncio.new_event_loop()
    yield event_loop
    event_loop.close()


@pytest.fixture
def run(loop: asyncio.AbstractEventLoop):  # type: ignore[no-untyped-def]
    """``run(coro)`` runs a coroutine on the test's loop and answers its result."""

    def runner(coro: Awaitable[T]) -> T:
        return loop.run_until_complete(coro)

    return runner


@pytest.fixture
def queue(redis_server: RedisServer, loop: asyncio.AbstractEventLoop) -> Iterator[JobQueue]:
    """A queue on the test's Redis (prefix ``t:``, records kept 60 s)."""
    client = connect(redis_server.url)
    jobs = JobQueue(client, prefix="t:", job_ttl=60)
    yield jobs
    loop.run_until_complete(client.aclose())


@pytest.fixture
def consumer(queue: JobQueue, run) -> QueueConsumer:  # type: ignore[no-untyped-def]
    """A consumer playing a worker, on the same Redis and prefix."""
    worker = QueueConsumer(queue.redis, "worker-a", prefix="t:", job_ttl=60)
    run(worker.ensure_groups())
    return worker
