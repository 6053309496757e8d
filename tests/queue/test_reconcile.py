"""``JobQueue.reconcile_after_restore``: a Redis restored from a snapshot taken while jobs
flowed agrees with the (later) run store, and a real worker then runs every interrupted
job exactly once and none that had ended.

The old cluster's Redis is snapshotted for real (``fetch_rdb``), converted to an AOF
(``rdb_to_aof``) and started as a new redis-server: what the reconcile sees is what a
restore gives it (the old host's worker holding jobs, its registration, a delivered entry
not yet started)."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis.asyncio as aioredis

from mimir.core.backup.redis_rdb import fetch_rdb, rdb_to_aof
from mimir.core.queue import JobQueue, JobStatus, QueueConsumer, connect
from mimir.core.queue.consumer import Outcome
from mimir.core.queue.keys import GROUP
from tests.helpers import RedisServer, WorkerProcess, async_wait_until, free_port, wait_until
from tests.worker.conftest import sleep_job

pytestmark = pytest.mark.slow

T = TypeVar("T")


@pytest.fixture
def run() -> Iterator[Callable[[Awaitable[T]], T]]:
    loop = asyncio.new_event_loop()
    yield loop.run_until_complete  # type: ignore[misc]
    loop.close()


async def _state(client: aioredis.Redis, prefix: str) -> dict[str, Any]:
    """Every queue key's type and content (for "a second call changes nothing")."""
    state: dict[str, Any] = {}
    async for key in client.scan_iter(match=f"{prefix}*", count=1000):
        kind = await client.type(key)
        if kind == "hash":
            state[key] = await client.hgetall(key)
        elif kind == "stream":
            groups = await client.xinfo_groups(key)
            state[key] = (
                await client.xrange(key),
                [(g["name"], g["pending"], g["consumers"]) for g in groups],
            )
        elif kind == "zset":
            state[key] = await client.zrange(key, 0, -1, withscores=True)
        elif kind == "list":
            state[key] = await client.lrange(key, 0, -1)
        elif kind == "set":
            state[key] = await client.smembers(key)
        else:
            state[key] = await client.get(key)
    return state


def test_reconcile_after_restore_then_a_worker_runs_each_interrupted_job_once(
    redis_server: RedisServer, tmp_path: Path, data_dir: Path, run: Any
) -> None:
    binary = shutil.which("redis-server")
    assert binary is not None
    old_client = connect(redis_server.url)
    old = JobQueue(old_client, job_ttl=3600)
    holder = QueueConsumer(old_client, "worker-oldhost-1", job_ttl=3600)
    stream = old.keys.stream("default", "normal")

    async def old_cluster() -> dict[str, str]:
        await old_client.config_set("repl-diskless-sync-delay", 0)  # snapshot at once
        await holder.ensure_groups()
        await holder.heartbeat(
            {"worker_id": holder.worker_id, "hostname": "oldhost", "pid": 1, "concurrency": 4},
            ttl=3600,
        )
        jobs: dict[str, str] = {}
        # Ended before the snapshot: left alone, not even asked about.
        jobs["ended"] = (await old.enqueue(sleep_job(0))).job_id
        (ended,) = await holder.fetch(1)
        await holder.finish([Outcome(ended, "succeeded", result={"ok": 1})])
        # Running on the old host's worker at snapshot time.
        jobs["running_no_retries"] = (await old.enqueue(sleep_job(0, max_retries=0))).job_id
        jobs["running"] = (await old.enqueue(sleep_job(0))).job_id
        jobs["running_then_ended"] = (await old.enqueue(sleep_job(0))).job_id
        started = await holder.fetch(3)
        assert [d.job_id for d in started] == [
            jobs["running_no_retries"],
            jobs["running"],
            jobs["running_then_ended"],
        ]
        # Delivered to the old worker (its blocking read) but not started yet.
        jobs["delivered"] = (await old.enqueue(sleep_job(0))).job_id
        read = await old_client.xreadgroup(GROUP, holder.worker_id, {stream: ">"}, count=1)
        assert read[0][1][0][1]["job"] == jobs["delivered"]
        # Waiting.
        for name in ("queued_1", "queued_2", "queued_then_failed"):
            jobs[name] = (await old.enqueue(sleep_job(0))).job_id
        jobs["scheduled"] = (await old.enqueue(sleep_job(0, delay=3600))).job_id
        jobs["scheduled_then_cancelled"] = (await old.enqueue(sleep_job(0, delay=3600))).job_id
        return jobs

    jobs = run(old_cluster())
    assert run(old.get(jobs["delivered"])).status is JobStatus.queued
    assert run(old.get(jobs["running"])).attempts == 1

    # The backup's Redis part, restored into a new directory and started with AOF on.
    restored = tmp_path / "restored"
    fetch_rdb(redis_server.url, restored / "dump.rdb", timeout=60)
    run(old_client.aclose())
    rdb_to_aof(binary, restored, timeout=60)
    new_server = RedisServer(port=free_port(), directory=restored).start()
    workers: list[WorkerProcess] = []
    try:
        client = connect(new_server.url)
        queue = JobQueue(client, job_ttl=3600)
        wait_until(lambda: run(_answers(client)), timeout=20, message="the restored Redis")
        assert len(run(queue.workers())) == 1  # the old host's worker, restored

        # The run store (snapshotted after Redis) knows these ended meanwhile.
        finals = {
            jobs["running_then_ended"]: "succeeded",
            jobs["queued_then_failed"]: "failed",
            jobs["scheduled_then_cancelled"]: "cancelled",
            jobs["running"]: "running",  # not an ended run: ignored
            "not-a-job": "succeeded",
        }
        asked: list[list[str]] = []

        async def final_status(job_ids: list[str]) -> dict[str, str]:
            asked.append(list(job_ids))
            return finals

        outcomes_before = run(client.xlen(queue.keys.outcomes))
        counts = run(queue.reconcile_after_restore(final_status))
        assert counts == {"requeued": 3, "finalised": 3, "untouched": 3}
        assert set(asked[0]) == set(jobs.values()) - {jobs["ended"]}
        assert run(client.xlen(queue.keys.outcomes)) == outcomes_before  # none re-emitted

        records = {name: run(queue.get(job_id)) for name, job_id in jobs.items()}
        for name in ("running_no_retries", "running", "delivered"):
            record = records[name]
            assert record.status is JobStatus.queued, name
            assert record.worker_id is None and record.started_at is None, name
            assert record.attempts == 0, name  # the interrupted attempt does not count
        assert records["running_then_ended"].status is JobStatus.succeeded
        assert records["queued_then_failed"].status is JobStatus.failed
        assert records["scheduled_then_cancelled"].status is JobStatus.cancelled
        assert records["scheduled"].status is JobStatus.scheduled
        assert records["ended"].status is JobStatus.succeeded
        dead, _ = run(queue.dead_letter())
        assert [entry.job_id for entry in dead] == [jobs["queued_then_failed"]]
        scheduled = run(client.zrange(queue.keys.scheduled, 0, -1))
        assert scheduled == [jobs["scheduled"]]
        waited = run(queue.wait(jobs["running_then_ended"], 0.1))
        assert not waited.timed_out and waited.job.status is JobStatus.succeeded
        # Nothing is held by a worker any more, no old consumer or registration is left.
        status = run(queue.status())
        assert status.running == 0 and status.queue_length == 5 and status.workers == 0
        assert run(queue.workers()) == []
        assert run(_keys(client, "mimir:worker*")) == []
        assert run(client.xinfo_consumers(stream, GROUP)) == []

        # Idempotent: a second call changes nothing.
        before = run(_state(client, "mimir:"))
        again = run(queue.reconcile_after_restore(final_status))
        assert again == {"requeued": 0, "finalised": 0, "untouched": 6}
        assert run(_state(client, "mimir:")) == before

        # A real worker on the restored Redis.
        versions = {
            name: records[name].version
            for name in ("running_then_ended", "queued_then_failed", "scheduled_then_cancelled")
        }
        last_outcome = run(client.xrevrange(queue.keys.outcomes, count=1))[0][0]
        worker = WorkerProcess(
            {"REDIS_URL": new_server.url, "MIMIR_DATA_DIR": str(data_dir)},
            log_path=tmp_path / "worker.log",
        )
        workers.append(worker)
        worker.start()
        runnable = ["running_no_retries", "running", "delivered", "queued_1", "queued_2"]
        for name in runnable:
            result = run(queue.wait(jobs[name], 30))
            assert not result.timed_out, (name, worker.output())
            assert result.job.status is JobStatus.succeeded, (name, result.job)
            assert result.job.attempts == 1 and result.job.worker_id == worker.worker_id, name

        async def drained() -> bool:
            figures = await queue.status()
            return figures.queue_length == 0 and figures.running == 0

        run(async_wait_until(drained, timeout=20, message="the worker to drain the queue"))
        ran = [
            fields["job"]
            for _, fields in run(client.xrange(queue.keys.outcomes, min=f"({last_outcome}"))
        ]
        assert sorted(ran) == sorted(jobs[name] for name in runnable)  # each exactly once
        for name, version in versions.items():
            assert run(queue.get(jobs[name])).version == version, name  # never touched again
        assert run(queue.get(jobs["scheduled"])).status is JobStatus.scheduled
        assert [w.worker_id for w in run(queue.workers())] == [worker.worker_id]
        run(client.aclose())
    finally:
        for worker in workers:
            worker.kill()
        new_server.stop(kill=True)


async def _answers(client: aioredis.Redis) -> bool:
    try:
        return bool(await client.ping())
    except Exception:
        return False


async def _keys(client: aioredis.Redis, pattern: str) -> list[str]:
    return [key async for key in client.scan_iter(match=pattern)]


def test_reconcile_on_an_empty_redis_does_nothing(redis_server: RedisServer, run: Any) -> None:
    client = connect(redis_server.url)
    queue = JobQueue(client, prefix="t:")

    async def never(job_ids: list[str]) -> dict[str, str]:
        raise AssertionError("nothing to ask about")

    assert run(queue.reconcile_after_restore(never)) == {
        "requeued": 0,
        "finalised": 0,
        "untouched": 0,
    }
    run(client.aclose())
