"""The outcome stream, job origins and release, against a real redis-server: every job
that ends leaves one entry (record and the worker's detail) written with its status;
release drops what a stored run no longer needs."""

from __future__ import annotations

import asyncio
import json

import pytest

from mimir.core.queue import (
    Delivery,
    JobNotFoundError,
    JobQueue,
    JobSpec,
    JobStateError,
    JobStatus,
    Outcome,
    QueueConsumer,
)


def spec(**options: object) -> JobSpec:
    return JobSpec(payload={"n": 1}, pipeline="demo", **options)


def outcomes(queue: JobQueue, run) -> list[dict[str, str]]:
    entries = run(queue.redis.xrange(queue.keys.outcomes))
    return [fields for _, fields in entries]


DETAIL = {
    "steps": [
        {
            "index": 0,
            "name": "s",
            "plugin": "Debug.echo",
            "status": "succeeded",
            "duration_ms": 1.5,
            "error": None,
            "started_at": "2026-01-01T00:00:00.000Z",
        }
    ],
    "logs": [{"t": "2026-01-01T00:00:00.000Z", "level": "INFO", "step": "s", "msg": "hi"}],
    "logs_truncated": False,
    "artifacts": [],
}


def test_origin_round_trips(queue: JobQueue, consumer: QueueConsumer, run) -> None:
    origin = {"kind": "schedule", "id": "sch1", "tick": "2026-01-01T00:00:00Z"}
    job = run(queue.enqueue(spec(origin=origin)))
    assert job.origin == origin
    assert run(queue.get(job.job_id)).origin == origin
    plain = run(queue.enqueue(spec()))
    assert run(queue.get(plain.job_id)).origin is None
    (delivery, _) = run(consumer.fetch(5))
    run(consumer.finish([Outcome(delivery, "succeeded", result=1, duration=0.01)]))
    (entry, *_) = [o for o in outcomes(queue, run) if o["job"] == job.job_id]
    assert json.loads(json.loads(entry["record"])["origin"]) == origin


def test_a_finish_writes_one_outcome_with_record_and_detail(
    queue: JobQueue, consumer: QueueConsumer, run
) -> None:
    job = run(queue.enqueue(spec(max_retries=0)))
    (delivery,) = run(consumer.fetch(5))
    outcome = Outcome(delivery, "succeeded", result={"ok": True}, duration=0.02, detail=DETAIL)
    run(consumer.finish([outcome]))
    (entry,) = outcomes(queue, run)
    assert entry["job"] == job.job_id
    record = json.loads(entry["record"])
    assert record["status"] == "succeeded" and record["job_id"] == job.job_id
    assert json.loads(record["result"]) == {"ok": True}
    assert record["pipeline"] == "demo" and record["attempts"] == "1"
    assert record["worker_id"] == "worker-a" and record["finished_at"]
    assert "payload" not in record and "stream" not in record
    assert json.loads(entry["detail"]) == DETAIL
    # The waiters' token is the same record.
    assert run(queue.wait(job.job_id, 5)).job.status is JobStatus.succeeded


def test_a_retry_writes_no_outcome_the_final_failure_does(
    queue: JobQueue, consumer: QueueConsumer, run
) -> None:
    job = run(queue.enqueue(spec(max_retries=1, retry_backoff=0)))
    (delivery,) = run(consumer.fetch(5))
    run(consumer.finish([Outcome(delivery, "failed", error="first", detail=DETAIL)]))
    assert outcomes(queue, run) == []
    run(asyncio.sleep(0.05))
    run(consumer.move_due())
    (delivery,) = run(consumer.fetch(5))
    run(consumer.finish([Outcome(delivery, "failed", error="second", detail=DETAIL)]))
    (entry,) = outcomes(queue, run)
    record = json.loads(entry["record"])
    assert entry["job"] == job.job_id and record["status"] == "failed"
    assert record["error"] == "second" and record["attempts"] == "2"
    assert json.loads(entry["detail"])["steps"][0]["name"] == "s"


def test_cancel_of_a_queued_job_and_a_dead_job_write_entries_without_detail(
    queue: JobQueue, consumer: QueueConsumer, run
) -> None:
    cancelled = run(queue.enqueue(spec()))
    run(queue.cancel(cancelled.job_id))
    dying = run(queue.enqueue(spec(max_retries=0)))
    (delivery,) = run(consumer.fetch(5))
    assert delivery.job_id == dying.job_id
    # Its lease runs out and it is delivered again: more than max_retries + 1 deliveries.
    assert run(consumer.reclaim(5, 0.0)) == []
    entries = {o["job"]: o for o in outcomes(queue, run)}
    assert set(entries) == {cancelled.job_id, dying.job_id}
    assert json.loads(entries[cancelled.job_id]["record"])["status"] == "cancelled"
    assert json.loads(entries[dying.job_id]["record"])["status"] == "dead"
    assert entries[cancelled.job_id]["detail"] == entries[dying.job_id]["detail"] == ""
    # Cancelling again, or a stale outcome from the dead job's worker, adds nothing.
    with pytest.raises(JobStateError):
        run(queue.cancel(cancelled.job_id))
    run(consumer.finish([Outcome(delivery, "succeeded", duration=0.1, detail=DETAIL)]))
    assert len(outcomes(queue, run)) == 2


def test_release_keeps_what_waiters_and_idempotency_need(
    queue: JobQueue, consumer: QueueConsumer, run, loop: asyncio.AbstractEventLoop
) -> None:
    job = run(queue.enqueue(spec(idempotency_key="once")))
    running = run(queue.enqueue(spec()))
    (first, second) = run(consumer.fetch(5))
    assert first.job_id == job.job_id
    # A waiter from before the end wakes with the record even if release follows at once.
    waiter = loop.create_task(queue.wait(job.job_id, 10))
    run(asyncio.sleep(0.05))
    run(consumer.finish([Outcome(first, "succeeded", result=7, duration=0.01)]))
    assert run(queue.release([job.job_id, running.job_id, "no-such-job"])) == 1
    woke = run(waiter)
    assert woke.job.status is JobStatus.succeeded and woke.job.result == 7
    # Gone: record, log stream, index entry; the done list holds the status only.
    r = queue.redis
    assert run(r.exists(queue.keys.job(job.job_id), queue.keys.log(job.job_id))) == 0
    assert run(r.zscore(queue.keys.index, job.job_id)) is None
    assert run(r.lrange(queue.keys.done(job.job_id), 0, -1)) == ["succeeded"]
    assert 0 < run(r.ttl(queue.keys.done(job.job_id))) <= 60
    for read in (queue.get, queue.payload):
        with pytest.raises(JobNotFoundError):
            run(read(job.job_id))
    with pytest.raises(JobNotFoundError):
        run(asyncio.wait_for(queue.wait(job.job_id, 30), 2))
    # The idempotency key still answers the first job (its record is gone: its status).
    assert run(r.get(queue.keys.idempotency("once"))) == job.job_id
    again = run(queue.enqueue(spec(idempotency_key="once")))
    assert (again.job_id, again.status) == (job.job_id, JobStatus.succeeded)
    # The running job was left alone: listed, counted, finishable.
    page = run(queue.list_jobs())
    assert [j.job_id for j in page.jobs] == [running.job_id] and page.total == 1
    assert run(queue.status()).running == 1
    run(consumer.finish([Outcome(second, "succeeded", duration=0.01)]))
    assert run(queue.release([running.job_id])) == 1
    assert run(queue.release([running.job_id])) == 0


def test_a_released_job_costs_at_most_500_bytes(
    queue: JobQueue, consumer: QueueConsumer, run
) -> None:
    jobs = run(queue.enqueue_many([spec(max_retries=0) for _ in range(200)]))
    ids = [j.job_id for j in jobs]
    deliveries: list[Delivery] = []
    while len(deliveries) < len(ids):
        deliveries += run(consumer.fetch(100))
    run(
        consumer.finish(
            [Outcome(d, "succeeded", result={"x": 1}, duration=0.01, detail=DETAIL)
             for d in deliveries]
        )
    )  # fmt: skip
    r = queue.redis

    def usage(job_id: str) -> int:
        total = 0
        for key in (queue.keys.job(job_id), queue.keys.done(job_id), queue.keys.log(job_id)):
            total += run(r.memory_usage(key, samples=0)) or 0
        return total

    before = sum(usage(i) for i in ids) / len(ids)
    assert run(queue.release(ids)) == len(ids)
    after = sum(usage(i) for i in ids) / len(ids)
    print(f"Redis bytes per finished job: {before:.0f} before release, {after:.0f} after")
    assert after <= 500, after
    assert after < before
