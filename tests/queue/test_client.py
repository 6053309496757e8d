"""The queue protocol against a real redis-server, with a consumer playing the worker."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from mimir.core.queue import (
    GROUP,
    JobNotFoundError,
    JobQueue,
    JobSpec,
    JobStateError,
    JobStatus,
    Outcome,
    Priority,
    QueueConsumer,
)
from tests.helpers import wait_until


def spec(**options: object) -> JobSpec:
    return JobSpec(payload={"n": options.pop("n", 0)}, **options)  # type: ignore[arg-type]


def test_enqueue_then_status_get_and_finish(queue: JobQueue, consumer: QueueConsumer, run) -> None:
    job = run(queue.enqueue(spec(pipeline="demo", timeout=5)))
    assert job.status is JobStatus.queued
    assert job.pipeline == "demo" and job.attempts == 0 and job.timeout == 5
    # The record enqueue answers is the one stored: same version, same times.
    assert run(queue.get(job.job_id)).model_dump(mode="json") == job.model_dump(mode="json")
    status = run(queue.status())
    assert status.queue_length == 1 and status.by_priority["normal"] == 1
    assert status.running == 0

    (delivery,) = run(consumer.fetch(5))
    assert delivery.job_id == job.job_id and delivery.attempt == 1
    assert delivery.payload == {"n": 0}
    running = run(queue.get(job.job_id))
    assert running.status is JobStatus.running and running.worker_id == "worker-a"
    status = run(queue.status())
    assert (status.queue_length, status.running) == (0, 1)

    run(consumer.finish([Outcome(delivery, "succeeded", result={"ok": True}, duration=0.01)]))
    waited = run(queue.wait(job.job_id, 5))
    assert not waited.timed_out
    assert waited.job.status is JobStatus.succeeded and waited.job.result == {"ok": True}
    assert waited.job.finished_at is not None and waited.job.finished_at >= waited.job.started_at
    status = run(queue.status())
    assert status.totals["succeeded"] == 1 and status.running == 0
    # The acknowledged entry is gone from the stream; nothing waits.
    assert run(queue.redis.xlen(delivery.stream)) == 0
    buckets, total, count = run(queue.duration_histogram())
    assert count == 1 and buckets[-1][1] == 1 and total == pytest.approx(0.01)


def test_wait_times_out_with_the_current_record(queue: JobQueue, run) -> None:
    job = run(queue.enqueue(spec()))
    started = time.monotonic()
    waited = run(queue.wait(job.job_id, 0.2))
    assert time.monotonic() - started >= 0.2
    assert waited.timed_out and waited.job.status is JobStatus.queued
    with pytest.raises(JobNotFoundError):
        run(queue.wait("no-such-job", 0.1))
    with pytest.raises(JobNotFoundError):
        run(queue.get("no-such-job"))


def test_several_waiters_all_wake(queue: JobQueue, consumer: QueueConsumer, run) -> None:
    import asyncio

    job = run(queue.enqueue(spec()))

    async def scenario() -> list[bool]:
        waiters = [asyncio.ensure_future(queue.wait(job.job_id, 10)) for _ in range(3)]
        await asyncio.sleep(0.05)
        (delivery,) = await consumer.fetch(1)
        await consumer.finish([Outcome(delivery, "succeeded")])
        return [w.timed_out for w in await asyncio.gather(*waiters)]

    assert run(scenario()) == [False, False, False]


def test_high_priority_first_and_low_not_starved(
    queue: JobQueue, consumer: QueueConsumer, run
) -> None:
    low = run(queue.enqueue(spec(priority=Priority.low)))
    normal = run(queue.enqueue(spec(priority=Priority.normal)))
    highs = run(queue.enqueue_many([spec(priority=Priority.high, n=i) for i in range(3)]))
    order = [d.job_id for d in run(consumer.fetch(4))]
    assert order == [h.job_id for h in highs] + [normal.job_id]
    # More high work arrives; the anti-starvation fetch still takes the low job first.
    run(queue.enqueue_many([spec(priority=Priority.high) for _ in range(3)]))
    first = run(consumer.fetch(2, low_first=True))
    assert first[0].job_id == low.job_id and first[1].priority == "high"


def test_idempotency_key_returns_the_first_job(queue: JobQueue, run) -> None:
    first = run(queue.enqueue(spec(idempotency_key="order-42")))
    again = run(queue.enqueue(spec(idempotency_key="order-42", n=9)))
    other = run(queue.enqueue(spec(idempotency_key="order-43")))
    assert again.job_id == first.job_id and other.job_id != first.job_id
    assert run(queue.status()).queue_length == 2
    assert run(queue.payload(first.job_id)) == {"n": 0}


def test_delayed_job_moves_into_its_stream_when_due(
    queue: JobQueue, consumer: QueueConsumer, run
) -> None:
    job = run(queue.enqueue(spec(delay=0.4)))
    assert job.status is JobStatus.scheduled and job.scheduled_for is not None
    assert run(queue.status()).scheduled == 1
    run(consumer.move_due())
    assert run(consumer.fetch(1)) == []  # not due yet
    wait_until(lambda: run(consumer.move_due()) is None, timeout=5, message="job due")
    assert datetime.now(UTC) >= job.scheduled_for
    (delivery,) = run(consumer.fetch(1))
    assert delivery.job_id == job.job_id


def test_cancel_queued_and_scheduled_jobs(queue: JobQueue, consumer: QueueConsumer, run) -> None:
    queued = run(queue.enqueue(spec()))
    delayed = run(queue.enqueue(spec(delay=60)))
    assert run(queue.cancel(queued.job_id)).status is JobStatus.cancelled
    assert run(queue.cancel(delayed.job_id)).status is JobStatus.cancelled
    status = run(queue.status())
    assert (status.queue_length, status.scheduled, status.totals["cancelled"]) == (0, 0, 2)
    assert run(consumer.fetch(5)) == []
    assert not run(queue.wait(queued.job_id, 5)).timed_out
    with pytest.raises(JobStateError, match="already ended"):
        run(queue.cancel(queued.job_id))
    with pytest.raises(JobNotFoundError):
        run(queue.cancel("nope"))


def test_a_job_cancelled_between_the_blocking_read_and_its_start_leaves_no_pending_entry(
    queue: JobQueue, consumer: QueueConsumer, run
) -> None:
    # A worker's blocking XREADGROUP delivers the entry (now in its pending list), and the
    # cancel of the still-queued job deletes it before the script that starts it runs.
    job = run(queue.enqueue(spec()))
    stream = queue.keys.stream("default", "normal")
    run(queue.redis.xreadgroup(GROUP, consumer.worker_id, {stream: ">"}, count=1))
    assert run(queue.cancel(job.job_id)).status is JobStatus.cancelled
    assert run(queue.status()).running == 1  # the delivered entry, until the worker looks
    assert run(consumer.read_blocking(5, 1)) == []
    assert run(queue.redis.xpending(stream, GROUP))["pending"] == 0
    assert run(queue.status()).running == 0
    assert run(queue.get(job.job_id)).status is JobStatus.cancelled


def test_cancel_running_job_is_flagged_for_its_worker(
    queue: JobQueue, consumer: QueueConsumer, run
) -> None:
    job = run(queue.enqueue(spec()))
    (delivery,) = run(consumer.fetch(1))
    flagged = run(queue.cancel(job.job_id))
    assert flagged.status is JobStatus.running and flagged.cancel_requested
    assert run(consumer.renew([delivery])) == ["cancel"]
    run(consumer.finish([Outcome(delivery, "cancelled", error="cancelled while running")]))
    assert run(queue.get(job.job_id)).status is JobStatus.cancelled


def test_failure_retries_with_backoff_then_dead_letter(
    queue: JobQueue, consumer: QueueConsumer, run
) -> None:
    job = run(queue.enqueue(spec(max_retries=1, retry_backoff=0.2)))
    (first,) = run(consumer.fetch(1))
    before = datetime.now(UTC)
    run(consumer.finish([Outcome(first, "failed", error="boom 1")]))
    record = run(queue.get(job.job_id))
    assert record.status is JobStatus.scheduled and record.error == "boom 1"
    assert record.scheduled_for is not None
    delay = (record.scheduled_for - before).total_seconds()
    assert 0.09 <= delay <= 0.31  # 0.2 s ± 50 % jitter
    wait_until(lambda: run(consumer.move_due()) is None, timeout=5)
    (second,) = run(consumer.fetch(1))
    assert second.attempt == 2
    run(consumer.finish([Outcome(second, "failed", error="boom 2")]))
    record = run(queue.get(job.job_id))
    assert record.status is JobStatus.failed and record.error == "boom 2"
    entries, total = run(queue.dead_letter())
    assert total == 1 and entries[0].job_id == job.job_id and entries[0].error == "boom 2"

    again = run(queue.retry_dead(job.job_id))
    assert again.status is JobStatus.queued and again.attempts == 0 and again.error is None
    assert run(queue.dead_letter())[1] == 0
    (third,) = run(consumer.fetch(1))
    assert third.attempt == 1
    with pytest.raises(JobStateError):
        run(queue.retry_dead(job.job_id))


def test_expired_lease_is_reclaimed_and_the_old_holder_is_fenced_off(
    queue: JobQueue, consumer: QueueConsumer, run
) -> None:
    job = run(queue.enqueue(spec(max_retries=3)))
    (held,) = run(consumer.fetch(1))
    other = QueueConsumer(queue.redis, "worker-b", prefix="t:", job_ttl=60)
    assert run(other.reclaim(5, min_idle=10)) == []  # lease still fresh
    taken = wait_until(lambda: run(other.reclaim(5, min_idle=0.1)), timeout=5)
    assert taken[0].job_id == job.job_id and taken[0].attempt == 2
    # The first holder learns it lost the job, and its late outcome is not written.
    assert run(consumer.renew([held])) == ["lost"]
    late = Outcome(held, "succeeded", result="late")
    run(consumer.finish([late]))
    assert late.applied == "stale"
    run(other.finish([Outcome(taken[0], "succeeded", result="b")]))
    record = run(queue.get(job.job_id))
    assert (record.status, record.result, record.worker_id) == (
        JobStatus.succeeded,
        "b",
        "worker-b",
    )
    assert run(queue.status()).totals["succeeded"] == 1


def test_renewing_keeps_the_lease(queue: JobQueue, consumer: QueueConsumer, run) -> None:
    run(queue.enqueue(spec()))
    (held,) = run(consumer.fetch(1))
    other = QueueConsumer(queue.redis, "worker-b", prefix="t:", job_ttl=60)
    deadline = time.monotonic() + 0.6
    while time.monotonic() < deadline:
        assert run(consumer.renew([held])) == ["ok"]
        assert run(other.reclaim(5, min_idle=0.3)) == []


def test_too_many_deliveries_go_to_the_dead_letter(queue: JobQueue, run) -> None:
    job = run(queue.enqueue(spec(max_retries=1)))
    workers = [QueueConsumer(queue.redis, f"w{i}", prefix="t:", job_ttl=60) for i in range(3)]
    run(workers[0].ensure_groups())
    assert run(workers[0].fetch(1))[0].attempt == 1  # ... and w0 "dies"
    second = wait_until(lambda: run(workers[1].reclaim(1, min_idle=0.05)), timeout=5)
    assert second[0].attempt == 2  # ... and w1 dies too
    # The third delivery would exceed max_retries + 1: dead, not run.
    wait_until(
        lambda: (
            run(queue.get(job.job_id)).status is JobStatus.dead
            or run(workers[2].reclaim(1, min_idle=0.05))
        ),
        timeout=5,
    )
    record = run(queue.get(job.job_id))
    assert record.status is JobStatus.dead and "delivered 3 times" in (record.error or "")
    assert run(queue.status()).dead == 1
    assert not run(queue.wait(job.job_id, 1)).timed_out


def test_list_jobs_filters_and_pages(queue: JobQueue, consumer: QueueConsumer, run) -> None:
    jobs = run(queue.enqueue_many([spec(n=i) for i in range(7)]))
    run(consumer.finish([Outcome(d, "succeeded") for d in run(consumer.fetch(3))]))
    page = run(queue.list_jobs(limit=4))
    assert page.total == 7 and len(page.jobs) == 4
    assert {j.job_id for j in page.jobs} <= {j.job_id for j in jobs}
    done = run(queue.list_jobs(JobStatus.succeeded))
    assert done.total == 3 and all(j.status is JobStatus.succeeded for j in done.jobs)
    waiting = run(queue.list_jobs(JobStatus.queued, offset=2, limit=1))
    assert waiting.total == 4 and len(waiting.jobs) == 1


def test_records_expire_after_the_ttl(redis_server, run) -> None:  # type: ignore[no-untyped-def]
    from mimir.core.queue import connect

    client = connect(redis_server.url)
    short = JobQueue(client, prefix="ttl:", job_ttl=1)
    job = run(short.enqueue(spec()))
    assert run(client.ttl(short.keys.job(job.job_id))) in (0, 1)
    wait_until(lambda: not run(client.exists(short.keys.job(job.job_id))), timeout=5)
    with pytest.raises(JobNotFoundError):
        run(short.get(job.job_id))
    run(client.aclose())


def test_enqueue_and_wait_in_one_go(queue: JobQueue, consumer: QueueConsumer, run) -> None:
    import asyncio

    async def scenario() -> tuple[object, object]:
        waiting = asyncio.ensure_future(queue.enqueue_and_wait(spec(n=7), 10))
        deliveries: list = []
        while not deliveries:
            deliveries = await consumer.fetch(1)
        await consumer.finish([Outcome(deliveries[0], "succeeded", result={"n": 7})])
        timed_out = await queue.enqueue_and_wait(spec(), 0.2)
        return await waiting, timed_out

    done, timed_out = run(scenario())
    assert not done.timed_out and done.job.status is JobStatus.succeeded  # type: ignore[attr-defined]
    assert done.job.result == {"n": 7}  # type: ignore[attr-defined]
    assert timed_out.timed_out and timed_out.job.status is JobStatus.queued  # type: ignore[attr-defined]


def test_every_change_raises_the_version_and_its_event_carries_it(
    queue: JobQueue, consumer: QueueConsumer, run
) -> None:
    """The console keeps the highest version it saw: a record read before a change must
    carry a lower version than the change's event (issue 13: a cancel reply read right
    after the script, still ``running``, arrived after the ``cancelled`` event)."""
    import json

    pubsub = queue.redis.pubsub(ignore_subscribe_messages=True)
    run(pubsub.subscribe(queue.keys.events))
    events: list[dict] = []

    def drain(count: int) -> None:
        deadline = time.monotonic() + 5
        while len(events) < count and time.monotonic() < deadline:
            message = run(pubsub.get_message(timeout=0.2))  # None: the subscribe reply
            if message is not None:
                events.append(json.loads(message["data"]))

    job = run(queue.enqueue(spec(pipeline="demo")))
    (delivery,) = run(consumer.fetch(1))
    flagged = run(queue.cancel(job.job_id))  # the reply a console reads: running, v3
    run(consumer.finish([Outcome(delivery, "cancelled", error="cancelled while running")]))
    final = run(queue.get(job.job_id))
    drain(4)
    mine = [e for e in events if e["job_id"] == job.job_id]
    assert [(e["status"], e["version"]) for e in mine] == [
        ("queued", 1),
        ("running", 2),
        ("running", 3),
        ("cancelled", 4),
    ]
    assert flagged.version == 3 and flagged.cancel_requested
    assert final.version == 4 and final.status is JobStatus.cancelled
    # The event is the record without its result: times, retries and flags included.
    last = mine[-1]
    assert last["started_at"] and last["finished_at"] and last["enqueued_at"]
    assert last["cancel_requested"] is True and last["max_retries"] == 2
    assert "result" not in last
    run(pubsub.aclose())


def test_a_retried_dead_job_has_no_times_of_its_last_run_and_deleting_removes_it(
    queue: JobQueue, consumer: QueueConsumer, run
) -> None:
    job = run(queue.enqueue(spec(max_retries=0, idempotency_key="once")))
    (delivery,) = run(consumer.fetch(1))
    run(consumer.finish([Outcome(delivery, "failed", error="boom")]))
    failed = run(queue.get(job.job_id))
    assert failed.started_at and failed.finished_at
    again = run(queue.retry_dead(job.job_id))
    assert again.version > failed.version
    assert again.started_at is None and again.finished_at is None and again.error is None

    with pytest.raises(JobStateError):  # queued: not in the dead letter
        run(queue.delete_dead(job.job_id))
    (delivery,) = run(consumer.fetch(1))
    run(consumer.finish([Outcome(delivery, "failed", error="boom again")]))
    assert run(queue.dead_letter())[1] == 1
    run(queue.delete_dead(job.job_id))
    assert run(queue.dead_letter())[1] == 0
    with pytest.raises(JobNotFoundError):
        run(queue.get(job.job_id))
    assert job.job_id not in [j.job_id for j in run(queue.list_jobs()).jobs]
    # Its idempotency key went with it: the same key makes a new job.
    assert run(queue.enqueue(spec(idempotency_key="once"))).job_id != job.job_id
    with pytest.raises(JobNotFoundError):
        run(queue.delete_dead(job.job_id))
