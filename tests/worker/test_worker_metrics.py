"""A worker's counts for ``GET /metrics`` (``mimir.core.queue.metrics``) that it made
after its last heartbeat go to Redis as it exits: a scaled-away worker loses none."""

from __future__ import annotations

import signal
from collections.abc import Awaitable, Callable
from typing import Any

from mimir.core.queue import JobQueue
from tests.helpers import WorkerProcess, wait_until
from tests.worker.conftest import sleep_job


def test_counts_made_after_the_last_heartbeat_go_with_the_exit(
    make_worker: Callable[..., WorkerProcess],
    queue: JobQueue,
    run: Callable[[Awaitable[Any]], Any],
) -> None:
    # Heartbeats 20 s apart (the lease/3 tick): the one sent as the drain begins (within
    # the 1 s blocking read after SIGTERM) comes before the 3 s job ends, and no other
    # follows before the worker exits.
    worker = make_worker(
        MIMIR_WORKER_HEARTBEAT="30", MIMIR_WORKER_LEASE="60", MIMIR_WORKER_GRACE="30"
    )
    record = run(queue.enqueue(sleep_job(3.0)))
    wait_until(
        lambda: run(queue.get(record.job_id)).status == "running", timeout=10, message="running"
    )
    assert worker.process is not None
    worker.process.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0, worker.output()
    assert run(queue.get(record.job_id)).status == "succeeded"

    jobs, job_time, step_time = run(queue.worker_metrics())
    assert jobs == {("default", "default", "succeeded"): 1.0}
    assert list(job_time) == [("default", "default", "sleepy")]
    duration = job_time[("default", "default", "sleepy")]
    assert duration.count == 1 and duration.buckets[-1] == (float("inf"), 1)
    assert 3.0 <= duration.sum < 10
    assert {k: h.count for k, h in step_time.items()} == {
        ("default", "Debug.sleep", "succeeded"): 1
    }
