"""RunStore against SQLite and PostgreSQL alike (the ``database_url`` fixture)."""

from __future__ import annotations

import hashlib
import json
import random
import threading
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from mimir.core.queue.protocol import RECORD_FIELDS, encode
from mimir.core.runstore.db import make_engine
from mimir.core.runstore.models import (
    ArtifactRecord,
    LogLine,
    RunFilter,
    RunIn,
    RunSummary,
    StepRecord,
)
from mimir.core.runstore.runs import (
    InvalidCursorError,
    RunStore,
    run_artifacts,
    run_from_outcome,
    run_logs,
    run_steps,
)

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def make_run(
    job_id: str,
    *,
    pipeline: str | None = "etl",
    status: str = "succeeded",
    queue: str = "default",
    finished_at: datetime = T0,
    duration_ms: float | None = 1000.0,
    error: str | None = None,
    origin_id: str | None = None,
    steps: int = 2,
    logs: int = 2,
) -> RunIn:
    started_at = None if duration_ms is None else finished_at - timedelta(milliseconds=duration_ms)
    return RunIn(
        job_id=job_id,
        pipeline=pipeline,
        status=status,
        queue=queue,
        attempts=1,
        worker_id="w1",
        enqueued_at=(started_at or finished_at) - timedelta(seconds=1),
        started_at=started_at,
        finished_at=finished_at,
        duration_ms=duration_ms,
        error=error,
        origin_kind="schedule" if origin_id else None,
        origin_id=origin_id,
        definition_hash="0" * 64,
        max_retries=2,
        context={"n": 1},
        options={"queue": queue},
        result={"rows": 3},
        definition={"name": pipeline, "steps": []},
        steps=[
            StepRecord(
                index=i, name=f"s{i}", plugin="Input.csv", status="succeeded", duration_ms=1.0
            )
            for i in range(steps)
        ],
        artifacts=[ArtifactRecord(name=f"out/{job_id}.csv", size=10, content_type="text/csv")],
        logs=[
            LogLine(t=finished_at, level="INFO", step="s0", msg=f"line {i}") for i in range(logs)
        ],
    )


def child_count(engine: Engine, table: Any, job_id: str | None = None) -> int:
    stmt = select(func.count()).select_from(table)
    if job_id is not None:
        stmt = stmt.where(table.c.job_id == job_id)
    with engine.connect() as connection:
        return int(connection.execute(stmt).scalar_one())


def walk(store: RunStore, filter: RunFilter | None = None, limit: int = 7) -> list[RunSummary]:
    out: list[RunSummary] = []
    cursor = None
    while True:
        page, cursor = store.list(filter, limit=limit, cursor=cursor)
        assert len(page) <= limit
        out += page
        if cursor is None:
            return out


def newest_first(runs: list[RunIn]) -> list[str]:
    return [r.job_id for r in sorted(runs, key=lambda r: (r.finished_at, r.job_id), reverse=True)]


# --- run_from_outcome -------------------------------------------------------------------


def test_run_from_outcome_reads_the_hash_encodings() -> None:
    definition = {
        "name": "daily-sales",
        "description": "é",
        "steps": [{"name": "read", "plugin": "Input.csv", "config": {"path": "a.csv"}}],
    }
    origin = {"kind": "schedule", "id": "sch_1", "tick": "2026-11-30T12:00:00Z"}
    values: dict[str, Any] = {
        "job_id": "job-1",
        "type": "pipeline",
        "status": "failed",
        "priority": "high",
        "queue": "etl",
        "attempts": 3,
        "max_retries": 2,
        "timeout": 60.0,
        "worker_id": "host:123:ab",
        "pipeline": "daily-sales",
        "enqueued_at": "2026-11-30T12:00:00.000Z",
        "started_at": "2026-11-30T12:00:01.250Z",
        "finished_at": "2026-11-30T12:00:03.750Z",
        "progress": {"step": 1, "total": 1, "name": "read"},
        "result": {"ok": False},
        "error": "ValueError: bad row 7",
        "version": 9,
    }
    # The record as the outcome entry carries it: every field as its text in the hash.
    record = {name: encode(RECORD_FIELDS[name], value) for name, value in values.items()}
    record["origin"] = json.dumps(origin, separators=(",", ":"))
    record["idempotency_key"] = "schedule:sch_1:2026-11-30T12:00:00Z"
    record["cancel_requested"] = ""
    detail = {
        "steps": [
            {
                "index": 0,
                "name": "read",
                "plugin": "Input.csv",
                "status": "failed",
                "duration_ms": 2400.5,
                "error": "ValueError: bad row 7",
                "started_at": "2026-11-30T12:00:01.300Z",
            }
        ],
        "logs": [
            {"t": "2026-11-30T12:00:01.300Z", "level": "INFO", "step": None, "msg": "start"},
            {"t": "2026-11-30T12:00:03.700Z", "level": "ERROR", "step": "read", "msg": "bad"},
        ],
        "logs_truncated": False,
        "artifacts": [
            {
                "name": "runs/job-1/out.csv",
                "size": 12,
                "content_type": "text/csv",
                "sha256": "ab" * 32,
                "step": "read",
            }
        ],
    }
    payload = {"pipeline": definition, "context": {"day": "2026-11-30"}}

    run = run_from_outcome(record, detail, payload)

    canonical = json.dumps(definition, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert run.definition_hash == hashlib.sha256(canonical.encode()).hexdigest()
    assert (run.job_id, run.status, run.priority, run.queue) == ("job-1", "failed", "high", "etl")
    assert (run.attempts, run.max_retries, run.timeout) == (3, 2, 60.0)
    assert run.finished_at == datetime(2026, 11, 30, 12, 0, 3, 750000, tzinfo=UTC)
    assert run.started_at is not None and run.started_at.tzinfo is UTC
    assert run.duration_ms == pytest.approx(2500.0)
    assert run.result == {"ok": False}
    assert run.error == "ValueError: bad row 7"
    assert (run.origin_kind, run.origin_id) == ("schedule", "sch_1")
    assert run.options["origin"] == origin
    assert run.options["idempotency_key"] == "schedule:sch_1:2026-11-30T12:00:00Z"
    assert run.context == {"day": "2026-11-30"} and run.definition == definition
    assert [s.name for s in run.steps] == ["read"] and run.steps[0].duration_ms == 2400.5
    assert [line.msg for line in run.logs] == ["start", "bad"]
    assert run.artifacts[0].name == "runs/job-1/out.csv"


def test_run_from_outcome_without_detail_or_payload() -> None:
    """A queued job cancelled (no detail) whose payload has expired."""
    record = {
        "job_id": "job-2",
        "type": "pipeline",
        "status": "cancelled",
        "priority": "normal",
        "queue": "default",
        "attempts": "0",
        "enqueued_at": "2026-11-30T12:00:00.000Z",
        "finished_at": "2026-11-30T12:00:05.000Z",
        "result": "",
        "error": "",
    }
    run = run_from_outcome(record, None, None)
    assert run.status == "cancelled" and run.started_at is None and run.duration_ms is None
    assert run.error is None and run.result is None and run.definition_hash is None
    assert run.steps == [] and run.logs == [] and run.origin_id is None


def test_stored_outcome_round_trips(store: RunStore) -> None:
    record = {
        "job_id": "job-3",
        "status": "succeeded",
        "pipeline": "p",
        "started_at": "2026-11-30T12:00:00.000Z",
        "finished_at": "2026-11-30T12:00:01.000Z",
        "result": '{"rows":[1,2]}',
    }
    detail = {
        "steps": [{"index": 0, "name": "a", "plugin": "X", "status": "succeeded"}],
        "logs": [{"t": "2026-11-30T12:00:00.500Z", "msg": "[log cut at 1 MiB]"}],
        "logs_truncated": True,
        "artifacts": [],
    }
    store.upsert([run_from_outcome(record, detail, {"pipeline": {"name": "p"}, "context": {}})])
    got = store.get("job-3")
    assert got is not None
    assert got.result == {"rows": [1, 2]} and got.logs_truncated is True
    assert got.finished_at == datetime(2026, 11, 30, 12, 0, 1, tzinfo=UTC)
    assert got.finished_at.tzinfo is UTC and got.started_at and got.started_at.tzinfo is UTC
    logs = store.logs("job-3")
    assert logs is not None and [line.msg for line in logs] == ["[log cut at 1 MiB]"]
    assert logs[0].t.tzinfo is UTC
    assert store.artifacts("job-3") == []
    assert store.get("nope") is None and store.logs("nope") is None
    assert store.artifacts("nope") is None


# --- upsert -----------------------------------------------------------------------------


def test_upsert_is_idempotent(store: RunStore, engine: Engine) -> None:
    run = make_run("a", steps=3, logs=4)
    assert store.upsert([run]) == 1
    assert store.upsert([run]) == 1
    assert store.count() == 1
    assert child_count(engine, run_steps) == 3
    assert child_count(engine, run_logs) == 1
    assert child_count(engine, run_artifacts) == 1

    # The same job again with fewer steps (a retry from the dead letter): replaced.
    again = make_run("a", status="failed", steps=1, logs=1, error="boom")
    store.upsert([again, make_run("b")])
    got = store.get("a")
    assert got is not None and got.status == "failed" and len(got.steps) == 1
    logs = store.logs("a")
    assert logs is not None and len(logs) == 1
    assert store.count() == 2 and child_count(engine, run_steps) == 3


def test_a_time_in_another_zone_is_stored_as_utc(store: RunStore) -> None:
    paris = timezone(timedelta(hours=1))
    store.upsert([make_run("z", finished_at=datetime(2026, 11, 30, 13, 0, tzinfo=paris))])
    got = store.get("z")
    assert got is not None and got.finished_at == T0 and got.finished_at.tzinfo is UTC
    page, _ = store.list(RunFilter(since=T0, until=T0 + timedelta(seconds=1)))
    assert [r.job_id for r in page] == ["z"]


def test_concurrent_upserts_of_the_same_runs_store_each_once(database_url: str) -> None:
    """Two servers (two engines, two threads) ingest the same outcomes in batches."""
    runs = [
        make_run(f"job-{i:04d}", finished_at=T0 + timedelta(seconds=i % 17), steps=2)
        for i in range(300)
    ]
    engines = [make_engine(database_url) for _ in range(2)]
    errors: list[BaseException] = []

    def ingest(engine: Engine, seed: int) -> None:
        try:
            order = runs[:]
            random.Random(seed).shuffle(order)
            store = RunStore(engine)
            for i in range(0, len(order), 25):
                store.upsert(order[i : i + 25])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    from mimir.core.runstore.db import migrate

    migrate(engines[0])
    threads = [threading.Thread(target=ingest, args=(e, n)) for n, e in enumerate(engines)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert not errors, errors
        store = RunStore(engines[0])
        assert store.count() == 300
        assert child_count(engines[0], run_steps) == 600
        assert child_count(engines[0], run_logs) == 300
        assert sorted(r.job_id for r in store.export()) == sorted(r.job_id for r in runs)
    finally:
        for engine in engines:
            engine.dispose()


# --- list, filters, pagination, export --------------------------------------------------


@pytest.fixture
def populated(store: RunStore) -> list[RunIn]:
    rng = random.Random(7)
    runs = []
    for i in range(120):
        status = rng.choice(["succeeded", "succeeded", "failed", "cancelled", "dead"])
        runs.append(
            make_run(
                f"r{i:03d}",
                pipeline=rng.choice(["etl", "Sales-Daily", "ingest_x", None]),
                status=status,
                queue=rng.choice(["default", "gpu"]),
                # Many runs share one end time: the job id breaks the tie.
                finished_at=T0 - timedelta(minutes=10 * (i // 4)),
                error=f"KeyError: column {i % 5} missing" if status == "failed" else None,
                origin_id=rng.choice([None, "sch_a", "trg_b"]),
                steps=1,
                logs=0,
            )
        )
    store.upsert(runs)
    return runs


def test_pagination_walks_every_run_once_newest_first(
    store: RunStore, populated: list[RunIn]
) -> None:
    for limit in (1, 7, 50, 500):
        seen = [r.job_id for r in walk(store, limit=limit)]
        assert seen == newest_first(populated)
    with pytest.raises(InvalidCursorError):
        store.list(cursor="not-a-cursor")


@pytest.mark.parametrize(
    ("filter", "keep"),
    [
        (RunFilter(pipeline="etl"), lambda r: r.pipeline == "etl"),
        (RunFilter(status="failed"), lambda r: r.status == "failed"),
        (RunFilter(queue="gpu"), lambda r: r.queue == "gpu"),
        (
            RunFilter(pipeline="Sales-Daily", status="succeeded"),
            lambda r: r.pipeline == "Sales-Daily" and r.status == "succeeded",
        ),
        (RunFilter(origin_id="sch_a"), lambda r: r.origin_id == "sch_a"),
        (
            RunFilter(since=T0 - timedelta(hours=1), until=T0 - timedelta(minutes=20)),
            lambda r: T0 - timedelta(hours=1) <= r.finished_at < T0 - timedelta(minutes=20),
        ),
        # q: the error text and the pipeline name, case-insensitively; % and _ are literal.
        (RunFilter(q="column 3"), lambda r: "column 3" in (r.error or "")),
        (RunFilter(q="sales-"), lambda r: (r.pipeline or "").lower().startswith("sales-")),
        (RunFilter(q="MISSING"), lambda r: "missing" in (r.error or "")),
        (RunFilter(q="t_x"), lambda r: r.pipeline == "ingest_x"),
        (RunFilter(q="%"), lambda r: False),
        (
            RunFilter(pipeline="etl", status="failed", q="column", queue="default"),
            lambda r: (
                r.pipeline == "etl"
                and r.status == "failed"
                and r.queue == "default"
                and "column" in (r.error or "")
            ),
        ),
    ],
)
def test_filters(store: RunStore, populated: list[RunIn], filter: RunFilter, keep: Any) -> None:
    expected = newest_first([r for r in populated if keep(r)])
    assert [r.job_id for r in walk(store, filter, limit=5)] == expected
    assert [r.job_id for r in store.export(filter)] == expected
    assert store.count(filter) == len(expected)


def test_export_reads_in_batches(store: RunStore, populated: list[RunIn]) -> None:
    store.batch_size = 9
    exported = store.export()
    assert not isinstance(exported, list)
    first = next(exported)
    assert first.job_id == newest_first(populated)[0]
    assert [first.job_id, *(r.job_id for r in exported)] == newest_first(populated)


def test_last_for_origin(store: RunStore, populated: list[RunIn]) -> None:
    expected = newest_first([r for r in populated if r.origin_id == "trg_b"])[:3]
    assert [r.job_id for r in store.last_for_origin("trg_b", 3)] == expected
    assert store.last_for_origin("nobody", 5) == []


# --- stats ------------------------------------------------------------------------------


def test_stats(store: RunStore) -> None:
    runs = []
    # pipeline a: 10 runs, 1..10 s, two failed and one dead; b: 4 runs, one cancelled
    # that never started; one old run outside the window.
    for i in range(10):
        status = "failed" if i in (2, 5) else "dead" if i == 9 else "succeeded"
        runs.append(
            make_run(
                f"a{i}",
                pipeline="a",
                status=status,
                duration_ms=(i + 1) * 1000.0,
                finished_at=T0 - timedelta(minutes=30 + i),
            )
        )
    for i in range(3):
        runs.append(make_run(f"b{i}", pipeline="b", duration_ms=100.0, finished_at=T0))
    runs.append(make_run("b3", pipeline="b", status="cancelled", duration_ms=None, finished_at=T0))
    runs.append(make_run("old", pipeline="a", finished_at=T0 - timedelta(days=3)))
    store.upsert(runs)
    since = T0 - timedelta(days=1)

    by_pipeline = {row.key: row for row in store.stats(since, "pipeline")}
    assert set(by_pipeline) == {"a", "b"}
    a, b = by_pipeline["a"], by_pipeline["b"]
    assert (a.count, a.succeeded, a.failed) == (10, 7, 3)
    assert a.failure_rate == pytest.approx(0.3)
    assert a.p50_ms == pytest.approx(5500.0)
    assert a.p95_ms == pytest.approx(9550.0)
    assert (b.count, b.succeeded, b.failed, b.failure_rate) == (4, 3, 0, 0.0)
    assert b.p50_ms == pytest.approx(100.0) and b.p95_ms == pytest.approx(100.0)

    by_status = {row.key: row.count for row in store.stats(since, "status")}
    assert by_status == {"succeeded": 10, "failed": 2, "dead": 1, "cancelled": 1}

    by_hour = {row.key: row.count for row in store.stats(since, "hour")}
    assert by_hour == {"2026-11-30T11:00:00Z": 10, "2026-11-30T12:00:00Z": 4}
    assert sum(row.count for row in store.stats(None, "status")) == 15
    with pytest.raises(ValueError):
        store.stats(since, "worker")  # type: ignore[arg-type,unused-ignore]


# --- prune ------------------------------------------------------------------------------


def test_prune_by_age_and_count(store: RunStore, engine: Engine) -> None:
    store.batch_size = 7
    runs = [make_run(f"p{i:02d}", finished_at=T0 - timedelta(hours=i)) for i in range(40)]
    store.upsert(runs)
    # older than 30 h: p31..p39 go (p30 finished exactly at the limit and stays)
    assert store.prune(T0 - timedelta(hours=30), 0) == 9
    assert store.count() == 31
    assert store.get("p30") is not None and store.get("p31") is None
    assert child_count(engine, run_steps, "p31") == 0
    assert child_count(engine, run_logs, "p31") == 0
    assert child_count(engine, run_artifacts, "p31") == 0
    # keep the newest 10
    assert store.prune(None, 10) == 21
    assert [r.job_id for r in store.export()] == [f"p{i:02d}" for i in range(10)]
    assert child_count(engine, run_steps) == 20
    assert store.prune(T0 - timedelta(days=365), 10) == 0
    assert store.prune(None, 0) == 0


def test_prune_by_count_with_equal_end_times(store: RunStore) -> None:
    store.upsert([make_run(f"e{i:02d}", finished_at=T0) for i in range(12)])
    assert store.prune(None, 5) == 7
    assert [r.job_id for r in store.export()] == [f"e{i:02d}" for i in range(11, 6, -1)]


def test_nul_characters_are_stored(store: RunStore) -> None:
    """PostgreSQL refuses NUL in text: a plugin's binary junk in an error must not stop
    the ingest."""
    run = make_run("nul", status="failed", error="bad\x00byte", logs=0)
    run.steps[0].error = "step\x00error"
    run.logs = [LogLine(t=T0, msg="log\x00line")]
    store.upsert([run])
    got = store.get("nul")
    assert got is not None and got.error == "bad\ufffdbyte"
    assert got.steps[0].error == "step\ufffderror"
    logs = store.logs("nul")
    assert logs is not None and logs[0].msg == "log\x00line"


def test_prune_while_runs_are_stored(database_url: str) -> None:
    """The pruner and the ingest (two engines, two threads) at once: no deadlock, no
    error; every new run stays, every old run not stored again goes."""
    from mimir.core.runstore.db import migrate

    engines = [make_engine(database_url) for _ in range(2)]
    migrate(engines[0])
    old = [make_run(f"old-{i:03d}", finished_at=T0 - timedelta(days=40)) for i in range(200)]
    new = [make_run(f"new-{i:03d}", finished_at=T0 + timedelta(seconds=i)) for i in range(200)]
    RunStore(engines[0]).upsert(old)
    errors: list[BaseException] = []

    def ingest() -> None:
        try:
            store = RunStore(engines[0])
            for i in range(0, 200, 10):
                # new runs, and an old one stored again in the same batch now and then
                store.upsert([*new[i : i + 10], old[i]])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def prune() -> None:
        try:
            store = RunStore(engines[1])
            store.batch_size = 5
            store.prune(T0 - timedelta(days=30), 0)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=ingest), threading.Thread(target=prune)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert not errors, errors
        store = RunStore(engines[0])
        store.prune(T0 - timedelta(days=30), 0)
        assert [r.job_id for r in store.export()] == [r.job_id for r in reversed(new)]
        assert child_count(engines[0], run_steps) == 2 * len(new)
    finally:
        for engine in engines:
            engine.dispose()
