"""Fixtures for the worker tests: real redis-server, real worker processes."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from mimir.core.jobs import pipeline_job
from mimir.core.pipeline import load_pipeline
from mimir.core.queue import JobQueue, JobSpec, connect
from tests.helpers import RedisServer, WorkerProcess

T = TypeVar("T")


def sleep_job(seconds: float, **options: Any) -> JobSpec:
    """A pipeline job whose one step sleeps ``seconds``."""
    pipeline = load_pipeline(
        {"name": "sleepy", "steps": [{"name": "nap", "plugin": "Debug.sleep",
                                      "config": {"seconds": seconds}, "output": "nap"}]}
    )  # fmt: skip
    return pipeline_job(pipeline, {}, **options)


def fail_job(message: str = "planned failure", **options: Any) -> JobSpec:
    """A pipeline job whose one step fails with ``message``."""
    pipeline = load_pipeline(
        {"name": "failing", "steps": [{"name": "boom", "plugin": "Debug.fail",
                                       "config": {"message": message}}]}
    )  # fmt: skip
    return pipeline_job(pipeline, {}, **options)


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    event_loop = asyncio.new_event_loop()
    yield event_loop
    event_loop.close()


@pytest.fixture
def run(loop: asyncio.AbstractEventLoop) -> Callable[[Awaitable[T]], T]:
    """``run(coro)`` on the test's loop."""
    return loop.run_until_complete


@pytest.fixture
def queue(redis_server: RedisServer, loop: asyncio.AbstractEventLoop) -> Iterator[JobQueue]:
    """The producer side, on the workers' Redis and default prefix."""
    client = connect(redis_server.url)
    yield JobQueue(client)
    loop.run_until_complete(client.aclose())


@pytest.fixture
def make_worker(
    redis_server: RedisServer, data_dir: Path, tmp_path: Path
) -> Iterator[Callable[..., WorkerProcess]]:
    """Start worker processes on the test's Redis; all are killed at the end."""
    workers: list[WorkerProcess] = []

    def make(concurrency: int = 5, queues: str = "default", **env: str) -> WorkerProcess:
        worker = WorkerProcess(
            {"REDIS_URL": redis_server.url, "MIMIR_DATA_DIR": str(data_dir), **env},
            concurrency=concurrency,
            queues=queues,
            log_path=tmp_path / f"worker-{len(workers)}.log",
        )
        workers.append(worker)
        return worker.start()

    yield make
    for worker in workers:
        worker.kill()
