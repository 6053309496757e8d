"""A worker's own bookkeeping in the races a process test cannot aim at: the Worker runs
in this process against a real redis-server, and the test orders the steps itself."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from mimir.core.queue import JobQueue, JobStatus
from mimir.worker.worker import Worker, WorkerConfig
from tests.helpers import RedisServer
from tests.worker.conftest import sleep_job

T = TypeVar("T")


async def _ended(queue: JobQueue, job_id: str, timeout: float) -> JobStatus:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        status = (await queue.get(job_id)).status
        if status not in (JobStatus.queued, JobStatus.running):
            return status
        if asyncio.get_running_loop().time() > deadline:
            return status
        await asyncio.sleep(0.02)


def test_a_cancel_heard_before_the_job_task_first_runs_still_ends_the_job(
    redis_server: RedisServer, queue: JobQueue, run: Callable[[Awaitable[T]], T]
) -> None:
    # The cancel listener can hear a job's cancel in the same loop turn as the fetch that
    # started it: the job's task is then cancelled before its first step, so its body
    # (its try/finally) never runs. The job must still end `cancelled` and free its slot;
    # it used to stay `running` in Redis with its lease renewed by a worker running nothing.
    async def scenario() -> tuple[JobStatus, int, int]:
        worker = Worker(WorkerConfig(redis_url=redis_server.url, concurrency=2, lease=60))
        writer = asyncio.create_task(worker._writer_loop())
        try:
            await worker.consumer.ensure_groups()
            job = await queue.enqueue(sleep_job(60))
            (delivery,) = await worker.consumer.fetch(1)
            assert delivery.job_id == job.job_id
            await queue.cancel(job.job_id)  # running: it sets cancel_requested and publishes
            worker._start(delivery)
            worker._cancel_requested(job.job_id)  # the published cancel, heard at once
            status = await _ended(queue, job.job_id, timeout=10)
            return status, len(worker.running), len(worker._pending)
        finally:
            worker._closing.set()
            worker._pending_event.set()
            await asyncio.wait_for(writer, 5)
            await worker.redis.aclose()

    status, running, pending = run(scenario())
    assert status is JobStatus.cancelled
    assert (running, pending) == (0, 0)
