"""Worker pools on real worker processes: a worker's pool and job types, the jobs it
refuses, and the drain/stop requests it takes with its heartbeat."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from mimir.core.queue import JobQueue, JobStatus
from tests.helpers import RedisServer, WorkerProcess, wait_until
from tests.worker.conftest import sleep_job

pytestmark = pytest.mark.slow


def status_of(run, queue: JobQueue, job_id: str) -> JobStatus:  # type: ignore[no-untyped-def]
    return run(queue.get(job_id)).status


def test_the_heartbeat_names_the_pool_and_job_types(
    make_worker: Callable[..., WorkerProcess], queue: JobQueue, run
) -> None:
    # Beats kept 1.5 s: a busy test machine does not make one lapse before it is read.
    plain = make_worker(MIMIR_WORKER_HEARTBEAT="0.5")
    slow = make_worker(
        queues="slow",
        MIMIR_WORKER_HEARTBEAT="0.5",
        MIMIR_WORKER_POOL="slow",
        MIMIR_WORKER_JOB_TYPES="pipeline, digital_twin",
    )
    by_id = {w.worker_id: w for w in run(queue.workers())}
    assert by_id[plain.worker_id].pool == "default"
    assert by_id[plain.worker_id].job_types is None
    assert by_id[slow.worker_id].pool == "slow"
    assert by_id[slow.worker_id].job_types == ["pipeline", "digital_twin"]
    assert by_id[slow.worker_id].queues == ["slow"]


def test_a_pool_without_queues_serves_the_queue_of_its_name(
    redis_server: RedisServer, data_dir: Path, tmp_path: Path, queue: JobQueue, run
) -> None:
    worker = WorkerProcess(
        {
            "REDIS_URL": redis_server.url,
            "MIMIR_DATA_DIR": str(data_dir),
            "MIMIR_WORKER_HEARTBEAT": "0.5",
        },
        log_path=tmp_path / "worker.log",
    )
    worker.queues = ""  # `--queues ""`: none given, so the pool's
    worker.args = ["--pool", "gpu"]
    worker.start()
    try:
        (info,) = run(queue.workers())
        assert (info.pool, info.queues) == ("gpu", ["gpu"])
        job = run(queue.enqueue(sleep_job(0, queue="gpu")))
        assert run(queue.wait(job.job_id, 20)).job.status is JobStatus.succeeded
    finally:
        worker.kill()


def test_an_invalid_pool_name_exits_2_saying_why(redis_server: RedisServer) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mimir.worker", "--pool", "Slow-Pool"],
        env={**os.environ, "REDIS_URL": redis_server.url, "MIMIR_WORKER_POOL": "default"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "--pool: invalid pool name 'Slow-Pool'" in done.stderr


def test_a_job_of_a_type_the_pool_does_not_run_fails_at_once_without_retry(
    make_worker: Callable[..., WorkerProcess], queue: JobQueue, run
) -> None:
    worker = make_worker(
        queues="slow", MIMIR_WORKER_POOL="slow", MIMIR_WORKER_JOB_TYPES="digital_twin,report"
    )
    job = run(queue.enqueue(sleep_job(0, queue="slow", max_retries=3)))
    record = run(queue.wait(job.job_id, 20)).job
    assert record.status is JobStatus.failed, record
    assert record.attempts == 1
    assert record.error == (
        "worker pool 'slow' does not run 'pipeline' jobs (it runs: digital_twin, report)"
    )
    entries, total = run(queue.dead_letter())
    assert total == 1 and entries[0].job_id == job.job_id
    assert worker.alive()


def test_drain_finishes_the_running_job_takes_no_more_and_exits_0(
    make_worker: Callable[..., WorkerProcess], queue: JobQueue, run
) -> None:
    worker = make_worker(concurrency=1)
    running = run(queue.enqueue(sleep_job(1.0)))
    wait_until(lambda: status_of(run, queue, running.job_id) is JobStatus.running, timeout=10)
    waiting = run(queue.enqueue(sleep_job(0)))

    run(queue.control_worker(worker.worker_id, "drain"))
    assert worker.wait(timeout=30) == 0, worker.output()
    assert status_of(run, queue, running.job_id) is JobStatus.succeeded
    assert status_of(run, queue, waiting.job_id) is JobStatus.queued  # never taken
    assert "drain requested" in worker.output()
    assert run(queue.workers()) == []


def test_the_heartbeat_shows_draining_while_the_worker_drains(
    make_worker: Callable[..., WorkerProcess], queue: JobQueue, run
) -> None:
    worker = make_worker(concurrency=1)
    job = run(queue.enqueue(sleep_job(3)))
    wait_until(lambda: status_of(run, queue, job.job_id) is JobStatus.running, timeout=10)
    run(queue.control_worker(worker.worker_id, "drain"))
    wait_until(
        lambda: any(w.draining for w in run(queue.workers())),
        timeout=10,
        message="the heartbeat to show draining",
    )
    assert worker.wait(timeout=30) == 0, worker.output()
    assert status_of(run, queue, job.job_id) is JobStatus.succeeded


def test_stop_hands_the_running_job_back_and_another_worker_runs_it_once(
    make_worker: Callable[..., WorkerProcess], queue: JobQueue, run
) -> None:
    first = make_worker(concurrency=1, MIMIR_WORKER_GRACE="60")
    job = run(queue.enqueue(sleep_job(2)))
    wait_until(lambda: status_of(run, queue, job.job_id) is JobStatus.running, timeout=10)

    run(queue.control_worker(first.worker_id, "stop"))
    assert first.wait(timeout=20) == 0, first.output()
    assert "handing 1 running jobs back" in first.output()
    record = run(queue.get(job.job_id))
    assert record.status is JobStatus.queued and record.attempts == 0

    second = make_worker(concurrency=1)
    done = run(queue.wait(job.job_id, 30)).job
    assert done.status is JobStatus.succeeded and done.worker_id == second.worker_id
    assert done.attempts == 1  # handed back: the interrupted attempt does not count
    assert run(queue.status()).totals["succeeded"] == 1


def test_stop_during_a_drain_ends_the_grace_at_once(
    make_worker: Callable[..., WorkerProcess], queue: JobQueue, run
) -> None:
    worker = make_worker(concurrency=1, MIMIR_WORKER_GRACE="60")
    job = run(queue.enqueue(sleep_job(30)))
    wait_until(lambda: status_of(run, queue, job.job_id) is JobStatus.running, timeout=10)
    run(queue.control_worker(worker.worker_id, "drain"))
    wait_until(lambda: "stopping: no new jobs" in worker.output(), timeout=10)
    run(queue.control_worker(worker.worker_id, "stop"))
    assert worker.wait(timeout=20) == 0, worker.output()
    assert status_of(run, queue, job.job_id) is JobStatus.queued
