"""Real worker processes against a real redis-server."""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from mimir.core.queue import JobQueue, JobStatus, Priority
from tests.helpers import RedisServer, WorkerProcess, wait_until
from tests.worker.conftest import fail_job, sleep_job

pytestmark = pytest.mark.slow


def status_of(run, queue: JobQueue, job_id: str) -> JobStatus:  # type: ignore[no-untyped-def]
    return run(queue.get(job_id)).status


def test_enqueue_status_wait_and_registry(
    make_worker: Callable[..., WorkerProcess], queue: JobQueue, run
) -> None:
    worker = make_worker()
    job = run(queue.enqueue(sleep_job(0.05)))
    waited = run(queue.wait(job.job_id, 20))
    assert not waited.timed_out
    record = waited.job
    assert record.status is JobStatus.succeeded and record.worker_id == worker.worker_id
    assert record.result["context"]["nap"] == {"slept": 0.05}
    assert record.progress is not None and (record.progress.step, record.progress.total) == (1, 1)
    (info,) = run(queue.workers())
    assert info.worker_id == worker.worker_id and info.pid == worker.pid
    assert info.concurrency == 5 and info.queues == ["default"]
    assert info.memory_bytes > 0
    wait_until(lambda: run(queue.workers())[0].succeeded == 1, timeout=10)
    assert run(queue.status()).workers == 1


def test_high_priority_runs_before_waiting_normal_and_low(
    make_worker: Callable[..., WorkerProcess], queue: JobQueue, run
) -> None:
    blocker = run(queue.enqueue(sleep_job(0.5)))
    make_worker(concurrency=1)
    wait_until(lambda: status_of(run, queue, blocker.job_id) is JobStatus.running, timeout=10)
    low = run(queue.enqueue(sleep_job(0, priority=Priority.low)))
    normal = run(queue.enqueue(sleep_job(0, priority=Priority.normal)))
    high = run(queue.enqueue(sleep_job(0, priority=Priority.high)))
    records = [run(queue.wait(j.job_id, 20)).job for j in (high, normal, low)]
    assert all(r.status is JobStatus.succeeded for r in records)
    starts = [r.started_at for r in records]
    assert starts == sorted(starts), starts


def test_timeout_fails_the_job(
    make_worker: Callable[..., WorkerProcess], queue: JobQueue, run
) -> None:
    make_worker()
    job = run(queue.enqueue(sleep_job(30, timeout=0.3, max_retries=0)))
    record = run(queue.wait(job.job_id, 20)).job
    assert record.status is JobStatus.failed and record.error == "timed out after 0.3s"
    assert run(queue.dead_letter())[0][0].job_id == job.job_id


def test_cancel_running_job(
    make_worker: Callable[..., WorkerProcess], queue: JobQueue, run
) -> None:
    make_worker()
    job = run(queue.enqueue(sleep_job(60)))
    wait_until(lambda: status_of(run, queue, job.job_id) is JobStatus.running, timeout=10)
    run(queue.cancel(job.job_id))
    record = run(queue.wait(job.job_id, 10)).job
    assert record.status is JobStatus.cancelled and record.error == "cancelled while running"
    # The worker goes on with other work.
    after = run(queue.enqueue(sleep_job(0)))
    assert run(queue.wait(after.job_id, 10)).job.status is JobStatus.succeeded


def test_cancel_published_while_the_listener_was_cut_off_still_stops_the_job(
    make_worker: Callable[..., WorkerProcess], queue: JobQueue, redis_server: RedisServer, run
) -> None:
    # The lease renewal (every 20 s here) is not what stops the job: the listener, once
    # subscribed again, asks Redis about its running jobs at once.
    make_worker(MIMIR_WORKER_LEASE="60")
    job = run(queue.enqueue(sleep_job(60)))
    wait_until(lambda: status_of(run, queue, job.job_id) is JobStatus.running, timeout=10)
    admin = redis.Redis.from_url(redis_server.url)
    try:
        assert admin.client_kill_filter(_type="pubsub") >= 1  # the worker's cancel listener
        run(queue.cancel(job.job_id))  # published while it reconnects: nobody hears it
    finally:
        admin.close()
    record = run(queue.wait(job.job_id, 8)).job
    assert record.status is JobStatus.cancelled and record.error == "cancelled while running"


def test_failing_job_retried_with_backoff_then_dead_letter(
    make_worker: Callable[..., WorkerProcess], queue: JobQueue, run
) -> None:
    make_worker()
    job = run(queue.enqueue(fail_job("nope", max_retries=2, retry_backoff=0.1)))
    record = run(queue.wait(job.job_id, 30)).job
    assert record.status is JobStatus.failed and record.attempts == 3
    assert "nope" in (record.error or "")
    assert record.result is not None and record.result["success"] is False
    entries, total = run(queue.dead_letter())
    assert total == 1 and entries[0].job_id == job.job_id
    assert run(queue.status()).totals["failed"] == 1


def test_kill_9_mid_jobs_every_job_succeeds_exactly_once_elsewhere(
    make_worker: Callable[..., WorkerProcess], queue: JobQueue, run
) -> None:
    doomed = make_worker(concurrency=4)
    jobs = run(queue.enqueue_many([sleep_job(1.0) for _ in range(6)]))
    wait_until(
        lambda: sum(status_of(run, queue, j.job_id) is JobStatus.running for j in jobs) == 4,
        timeout=10,
    )
    doomed.kill()
    survivor = make_worker(concurrency=4)
    records = [run(queue.wait(j.job_id, 30)).job for j in jobs]
    assert all(r.status is JobStatus.succeeded for r in records)
    assert {r.worker_id for r in records} == {survivor.worker_id}
    assert sorted(r.attempts for r in records) == [1, 1, 2, 2, 2, 2]
    assert run(queue.status()).totals["succeeded"] == 6  # each ended exactly once


def test_poison_job_that_kills_its_workers_goes_dead(
    make_worker: Callable[..., WorkerProcess], queue: JobQueue, run
) -> None:
    job = run(queue.enqueue(sleep_job(60, max_retries=1)))
    for attempt in (1, 2):
        worker = make_worker(MIMIR_WORKER_LEASE="1")
        wait_until(lambda a=attempt: run(queue.get(job.job_id)).attempts == a, timeout=15)
        worker.kill()  # the "poison" kills whoever runs it
    make_worker(MIMIR_WORKER_LEASE="1")
    record = run(queue.wait(job.job_id, 20)).job
    assert record.status is JobStatus.dead and "delivered 3 times" in (record.error or "")
    assert run(queue.dead_letter())[1] == 1


def test_sigterm_drains_running_jobs_and_exits_0(
    make_worker: Callable[..., WorkerProcess], queue: JobQueue, run
) -> None:
    worker = make_worker(concurrency=3)
    jobs = run(queue.enqueue_many([sleep_job(0.8) for _ in range(3)]))
    wait_until(
        lambda: all(status_of(run, queue, j.job_id) is JobStatus.running for j in jobs),
        timeout=10,
    )
    assert worker.stop(signal.SIGTERM) == 0, worker.output()
    assert all(status_of(run, queue, j.job_id) is JobStatus.succeeded for j in jobs)
    assert run(queue.workers()) == []


def test_sigterm_hands_back_what_outlasts_the_grace(
    make_worker: Callable[..., WorkerProcess], queue: JobQueue, run
) -> None:
    worker = make_worker(concurrency=2, MIMIR_WORKER_GRACE="0.2")
    jobs = run(queue.enqueue_many([sleep_job(1.5) for _ in range(2)]))
    wait_until(
        lambda: all(status_of(run, queue, j.job_id) is JobStatus.running for j in jobs),
        timeout=10,
    )
    assert worker.stop(signal.SIGTERM) == 0, worker.output()
    assert all(status_of(run, queue, j.job_id) is JobStatus.queued for j in jobs)
    other = make_worker(concurrency=2)
    records = [run(queue.wait(j.job_id, 20)).job for j in jobs]
    assert all(r.status is JobStatus.succeeded and r.worker_id == other.worker_id for r in records)
    assert all(r.attempts == 1 for r in records)  # handing back is not a failed delivery


def test_a_second_sigterm_hands_back_at_once_whatever_the_grace(
    make_worker: Callable[..., WorkerProcess], queue: JobQueue, run
) -> None:
    # What `mimir cluster down --grace 5` does to a worker started with a 60 s grace.
    worker = make_worker(concurrency=2, MIMIR_WORKER_GRACE="60")
    jobs = run(queue.enqueue_many([sleep_job(30) for _ in range(2)]))
    wait_until(
        lambda: all(status_of(run, queue, j.job_id) is JobStatus.running for j in jobs),
        timeout=10,
    )
    assert worker.process is not None
    worker.process.send_signal(signal.SIGTERM)
    wait_until(lambda: "stopping: no new jobs" in worker.output(), timeout=10)
    worker.process.send_signal(signal.SIGTERM)
    assert worker.process.wait(timeout=15) == 0, worker.output()
    assert "handing 2 running jobs back" in worker.output()
    assert all(status_of(run, queue, j.job_id) is JobStatus.queued for j in jobs)


def test_once_the_heartbeat_says_draining_no_job_goes_to_the_worker(
    make_worker: Callable[..., WorkerProcess], queue: JobQueue, run, redis_server: RedisServer
) -> None:
    """ "Draining" is a promise: a job enqueued once a stopping worker's heartbeat says so
    never goes to that worker. (It said so as the stop came, while its blocking read was
    still in flight: a job enqueued then ran on the worker on its way out; with a pool
    scaled to zero no wake-up was ever decided: CI, stop 27.) Here the read lasts 5 s
    (``MIMIR_WORKER_BLOCK``) and is seen blocked before the stop."""
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    worker = make_worker(MIMIR_WORKER_BLOCK="5")
    assert worker.process is not None
    wait_until(
        lambda: any(
            c.get("cmd") == "xreadgroup" and "b" in c.get("flags", "") for c in client.client_list()
        ),
        timeout=10,
        message="the worker blocked in its read",
    )
    client.close()
    worker.process.send_signal(signal.SIGTERM)
    # Draining, or exited (an idle worker says it only for a moment; an empty registry
    # alone may be a late heartbeat on a loaded machine, not the end).
    wait_until(
        lambda: (
            [w.draining for w in run(queue.workers())] == [True]
            or worker.process is None
            or worker.process.poll() is not None
        ),
        timeout=15,
        message="the heartbeat to say draining",
    )
    job = run(queue.enqueue(sleep_job(0)))
    assert worker.process.wait(timeout=15) == 0, worker.output()
    record = run(queue.get(job.job_id))
    assert record.status is JobStatus.queued and record.attempts == 0, (record, worker.output())
    # It waits for the next worker, which runs it once.
    other = make_worker()
    done = run(queue.wait(job.job_id, 10)).job
    assert done.status is JobStatus.succeeded and done.worker_id == other.worker_id
    assert done.attempts == 1


def test_the_worker_writes_its_log_in_the_log_dir(
    make_worker: Callable[..., WorkerProcess], queue: JobQueue, run, tmp_path: Path
) -> None:
    worker = make_worker(MIMIR_LOG_DIR=str(tmp_path / "logs"))
    [job] = run(queue.enqueue_many([sleep_job(0.01)]))
    run(queue.wait(job.job_id, 20))
    assert worker.stop(signal.SIGTERM) == 0
    text = (tmp_path / "logs" / f"worker-{socket.gethostname()}.log").read_text()
    assert f"{worker.worker_id} serving queues default" in text and "stopped" in text


def test_redis_restart_with_aof_loses_nothing(
    make_worker: Callable[..., WorkerProcess],
    queue: JobQueue,
    redis_server: RedisServer,
    run,
) -> None:
    worker = make_worker(concurrency=2)
    jobs = run(queue.enqueue_many([sleep_job(0.4) for _ in range(8)]))
    wait_until(lambda: run(queue.status()).running == 2, timeout=10)
    redis_server.restart()
    records = [run(queue.wait(j.job_id, 30)).job for j in jobs]
    assert [r.status for r in records] == [JobStatus.succeeded] * 8, worker.output()
    assert run(queue.status()).totals["succeeded"] == 8
    assert worker.alive()


def test_worker_survives_a_redis_outage(
    make_worker: Callable[..., WorkerProcess],
    queue: JobQueue,
    redis_server: RedisServer,
    run,
) -> None:
    worker = make_worker()
    redis_server.stop()
    wait_until(lambda: worker.output().count("Redis unavailable") >= 3, timeout=20)
    assert worker.alive()
    redis_server.start()
    wait_until(lambda: "Redis reachable again" in worker.output(), timeout=20)
    job = run(queue.enqueue(sleep_job(0)))
    assert run(queue.wait(job.job_id, 20)).job.status is JobStatus.succeeded
    assert worker.alive()


def test_pools_only_serve_their_queues(
    make_worker: Callable[..., WorkerProcess], queue: JobQueue, run
) -> None:
    make_worker(queues="default")
    gpu_job = run(queue.enqueue(sleep_job(0, queue="gpu")))
    plain = run(queue.enqueue(sleep_job(0)))
    assert run(queue.wait(plain.job_id, 10)).job.status is JobStatus.succeeded
    assert status_of(run, queue, gpu_job.job_id) is JobStatus.queued
    gpu_worker = make_worker(queues="gpu")
    record = run(queue.wait(gpu_job.job_id, 10)).job
    assert record.status is JobStatus.succeeded and record.worker_id == gpu_worker.worker_id


def test_cpu_share_is_measured_over_at_least_a_second() -> None:
    """Issue 13: a worker's first two heartbeats, milliseconds apart, read one 10 ms tick
    of ``os.times()`` as ~900 % on a 2-core machine, flattening the Dashboard's plot."""
    from mimir.worker.worker import _ProcessUsage

    now, cpu = [100.0], [5.0]
    usage = _ProcessUsage(1.0, clock=lambda: now[0], cpu_seconds=lambda: cpu[0])
    now[0], cpu[0] = 100.001, 5.01  # one tick in a millisecond: not a measurement
    assert usage.cpu_percent() == 0.0
    now[0], cpu[0] = 101.0, 5.5  # a second since the start: 0.5 s of CPU
    assert usage.cpu_percent() == 50.0
    now[0], cpu[0] = 101.002, 5.51
    assert usage.cpu_percent() == 50.0  # too soon again: the last share, not 500 %
    now[0], cpu[0] = 103.0, 5.5 + 0.2
    assert usage.cpu_percent() == 10.0  # 0.2 s over the 2 s since the last measurement
    real = _ProcessUsage()
    assert 0.0 <= real.cpu_percent() <= 100.0 * (os.cpu_count() or 1)
