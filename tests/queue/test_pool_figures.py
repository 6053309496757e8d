"""A pool's figures (what the autoscaler sizes it by), the queues nothing serves, and
the drain/stop requests a worker takes with its heartbeat: on a real redis-server."""

from __future__ import annotations

from typing import Any

import pytest

from mimir.core.queue import (
    JobQueue,
    JobSpec,
    Priority,
    QueueConsumer,
    WorkerNotFoundError,
)
from tests.helpers import wait_until


def beat(run, consumer: QueueConsumer, **info: Any) -> str | None:  # type: ignore[no-untyped-def]
    """One heartbeat of ``consumer`` as a worker sends it; what was asked of it."""
    fields: dict[str, Any] = {
        "worker_id": consumer.worker_id,
        "queues": consumer.queues,
        "pool": "default",
        "current_jobs": [],
        "processed": 0,
        "draining": "0",
        **info,
    }
    return run(consumer.heartbeat(fields, ttl=60))  # type: ignore[no-any-return]


def redis_ms(run, queue: JobQueue) -> int:  # type: ignore[no-untyped-def]
    seconds, micros = run(queue.redis.time())
    return int(seconds) * 1000 + int(micros) // 1000


def entry_ms(run, queue: JobQueue, job_id: str) -> int:  # type: ignore[no-untyped-def]
    """When the job's stream entry was added (its id's time part)."""
    entry = run(queue.redis.hget(queue.keys.job(job_id), "entry"))
    return int(str(entry).split("-")[0])


def test_counts_waiting_and_running_jobs_across_queues_and_priorities(
    queue: JobQueue, consumer: QueueConsumer, run
) -> None:
    run(queue.enqueue_many([JobSpec() for _ in range(3)]))
    run(queue.enqueue(JobSpec(priority=Priority.high)))
    run(queue.enqueue(JobSpec(priority=Priority.low)))
    run(queue.enqueue_many([JobSpec(queue="slow") for _ in range(2)]))
    run(queue.enqueue(JobSpec(queue="other")))
    assert len(run(consumer.fetch(2))) == 2  # the high one and one normal

    figures = run(
        queue.pool_figures({"default": ["default"], "slow": ["slow", "gpu"], "idle": ["none"]})
    )
    assert set(figures) == {"default", "slow", "idle"}
    assert (figures["default"].queued, figures["default"].running) == (3, 2)
    # No worker ever read "slow": it has no consumer group yet, every entry waits.
    assert (figures["slow"].queued, figures["slow"].running) == (2, 0)
    assert figures["slow"].oldest_age_s is not None and figures["slow"].oldest_age_s >= 0
    idle = figures["idle"]
    assert (idle.queued, idle.running, idle.oldest_age_s, idle.workers) == (0, 0, None, 0)


def test_the_oldest_age_is_of_the_first_job_not_yet_delivered(
    queue: JobQueue, consumer: QueueConsumer, run
) -> None:
    first = run(queue.enqueue(JobSpec()))
    first_ms = entry_ms(run, queue, first.job_id)
    wait_until(lambda: redis_ms(run, queue) - first_ms >= 300, timeout=5)
    second = run(queue.enqueue(JobSpec()))
    second_ms = entry_ms(run, queue, second.job_id)
    (delivered,) = run(consumer.fetch(1))
    assert delivered.job_id == first.job_id

    before = redis_ms(run, queue)
    figures = run(queue.pool_figures({"default": ["default"]}))["default"]
    after = redis_ms(run, queue)
    assert (figures.queued, figures.running) == (1, 1)
    assert figures.oldest_age_s is not None
    # The second job's age (the first one, delivered, no longer waits).
    assert (before - second_ms) / 1000 - 0.001 <= figures.oldest_age_s
    assert figures.oldest_age_s <= (after - second_ms) / 1000 + 0.001

    run(consumer.fetch(1))
    assert run(queue.pool_figures({"default": ["default"]}))["default"].oldest_age_s is None


def test_workers_busy_draining_and_processed_come_from_the_pools_heartbeats(
    queue: JobQueue, run
) -> None:
    make = lambda name, queues: QueueConsumer(queue.redis, name, queues, prefix="t:")  # noqa: E731
    a, b = make("worker-a", ["default"]), make("worker-b", ["default"])
    slow = make("worker-slow", ["slow"])
    beat(run, a, current_jobs=["j1"], processed=5)
    beat(run, b, draining="1", processed=2)
    beat(run, slow, pool="slow", processed=7, job_types=["pipeline"])
    beat(run, make("worker-old", ["default"]), pool="gone")

    figures = run(queue.pool_figures({"default": ["default"], "slow": ["slow"]}))
    default = figures["default"]
    assert (default.workers, default.busy, default.draining, default.processed) == (2, 1, 1, 7)
    assert (figures["slow"].workers, figures["slow"].processed) == (1, 7)

    by_id = {w.worker_id: w for w in run(queue.workers())}
    assert by_id["worker-slow"].pool == "slow"
    assert by_id["worker-slow"].job_types == ["pipeline"]
    assert by_id["worker-a"].pool == "default" and by_id["worker-a"].job_types is None


def test_unserved_queues_are_those_no_live_worker_nor_declared_pool_serves(
    queue: JobQueue, run
) -> None:
    run(queue.enqueue(JobSpec()))
    run(queue.enqueue(JobSpec(queue="gpu")))
    run(queue.enqueue(JobSpec(queue="slow")))
    assert run(queue.status()).unserved_queues == ["default", "gpu", "slow"]
    beat(run, QueueConsumer(queue.redis, "worker-a", ["default"], prefix="t:"))
    assert run(queue.status()).unserved_queues == ["gpu", "slow"]
    assert run(queue.status({"slow": ["slow"]})).unserved_queues == ["gpu"]
    assert run(queue.live_queues()) == {"default"}


def test_drain_and_stop_reach_the_worker_with_its_next_heartbeat_once(
    queue: JobQueue, consumer: QueueConsumer, run
) -> None:
    with pytest.raises(WorkerNotFoundError, match="worker-a"):
        run(queue.control_worker("worker-a", "drain"))
    assert beat(run, consumer) is None
    with pytest.raises(ValueError, match="unknown worker action"):
        run(queue.control_worker("worker-a", "explode"))

    run(queue.control_worker("worker-a", "drain"))
    assert beat(run, consumer) == "drain"
    assert beat(run, consumer) is None  # taken once

    run(queue.control_worker("worker-a", "stop"))
    run(queue.control_worker("worker-a", "drain"))  # does not soften the stop
    assert beat(run, consumer) == "stop"
    run(queue.control_worker("worker-a", "drain"))
    run(queue.control_worker("worker-a", "stop"))
    assert beat(run, consumer) == "stop"
    ttl = run(queue.redis.ttl(queue.keys.control("worker-a")))
    assert ttl == -2  # taken: gone

    run(queue.control_worker("worker-a", "drain"))
    assert 0 < run(queue.redis.ttl(queue.keys.control("worker-a"))) <= 60
    run(consumer.deregister())  # a clean exit drops what was left for it
    assert not run(queue.redis.exists(queue.keys.control("worker-a")))
    with pytest.raises(WorkerNotFoundError):
        run(queue.control_worker("worker-a", "stop"))
