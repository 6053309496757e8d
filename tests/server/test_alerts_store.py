"""The alert and audit tables on SQLite and PostgreSQL: migrations match the models, one
firing alert per rule, attempts recorded, audit pages newest first."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from pydantic import ValidationError
from redis.asyncio import Redis
from sqlalchemy import insert, inspect

from mimir.core.runstore.alerts import AlertStore, alert_rules, alerts, parse_rule
from mimir.core.runstore.audit import AuditLog, audit
from mimir.core.runstore.db import make_engine, migrate
from mimir.core.runstore.runs import RunStore, run_from_outcome
from mimir.core.runstore.schedules import schedules
from mimir.core.settings import Settings
from mimir.server.runs.alerting import Evaluator


def test_migrations_create_exactly_the_model_tables_and_the_store_works(
    database_url: str,
) -> None:
    engine = make_engine(database_url)
    try:
        migrate(engine)
        found = inspect(engine)
        for table in (alert_rules, alerts, audit):
            columns = {c["name"] for c in found.get_columns(table.name)}
            assert columns == {c.name for c in table.columns}, table.name
            indexes = {
                i["name"]
                for i in found.get_indexes(table.name)
                if not i.get("duplicates_constraint")  # PostgreSQL's unique constraint
            }
            assert indexes == {i.name for i in table.indexes}, table.name

        store = AlertStore(engine)
        rule = store.create_rule(
            parse_rule(
                {
                    "name": "dead jobs",
                    "kind": "run_failed",
                    "only_dead": True,
                    "channels": [{"type": "email", "to": ["a@b.c"]}],
                }
            )
        )
        assert store.get_rule(rule.id) == rule and rule.spec["only_dead"] is True
        assert rule.created_at.tzinfo is not None
        first = store.open_alert(rule, "boom", {"jobs": ["j1"]}, "sent")
        assert first is not None and first.state == "firing"
        # A second firing alert of the same rule is refused by the database itself.
        assert store.open_alert(rule, "boom again", {}, "sent") is None
        store.record_attempts(first.id, [{"event": "firing", "ok": False, "attempt": 1}])
        store.record_attempts(first.id, [{"event": "firing", "ok": True, "attempt": 2}])
        assert [a["attempt"] for a in store.list()[0].notifications] == [1, 2]
        assert store.last_notified(rule.id) is not None
        resolved = store.resolve(first.id, {"resolved_by": "test"})
        assert resolved is not None and resolved.state == "resolved" and resolved.resolved_at
        assert store.resolve(first.id) is None  # once
        second = store.open_alert(rule, "again", {}, "suppressed")
        assert second is not None
        assert [a.id for a in store.list()] == [second.id, first.id]
        assert [a.id for a in store.list(state="firing")] == [second.id]
        acked = store.ack(second.id, "token")
        assert acked is not None and acked.acked_by == "token"
        assert store.delete_rule(rule.id) and store.firing() == {}

        log = AuditLog(engine)
        base = datetime.now(UTC)
        log.write(
            [
                {
                    "at": base + timedelta(seconds=i),
                    "actor": "token" if i % 2 else "local",
                    "action": "pipelines.create",
                    "method": "POST",
                    "route": "/api/v1/pipelines",
                    "target": {"i": str(i)},
                    "outcome": 201,
                    "request_id": f"r{i}",
                    "duration_ms": 1.0,
                }
                for i in range(25)
            ]
        )
        seen: list[str] = []
        cursor = None
        while True:
            page, cursor = log.list(limit=10, cursor=cursor)
            seen += [e.target["i"] for e in page]
            if cursor is None:
                break
        assert seen == [str(i) for i in reversed(range(25))]
        assert len(log.list(actor="local", limit=100)[0]) == 13
        assert len(log.list(since=base + timedelta(seconds=20), limit=100)[0]) == 5
        assert log.count() == 25
    finally:
        engine.dispose()


def test_rule_validation_names_fields() -> None:
    with pytest.raises(ValidationError) as caught:
        parse_rule({"name": "x", "kind": "failure_rate", "threshold": 1.5})
    assert "threshold" in str(caught.value)
    rule = parse_rule({"name": " ok ", "kind": "backlog", "max_age_seconds": 60})
    assert rule.name == "ok" and rule.max_length is None and rule.cooldown_seconds == 300


def _evaluator(engine: Any) -> Evaluator:
    return Evaluator(Settings(), cast(Redis, None), engine)


def test_failure_rate_counts_the_window_of_the_run_store(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        migrate(engine)
        now = datetime.now(UTC)

        def run(job_id: str, status: str, pipeline: str, ago: float) -> Any:
            moment = (now - timedelta(seconds=ago)).isoformat()
            record = {"job_id": job_id, "pipeline": pipeline, "status": status,
                      "queue": "default", "priority": "normal", "type": "pipeline",
                      "attempts": "1", "enqueued_at": moment, "finished_at": moment}  # fmt: skip
            return run_from_outcome(record, None, None)

        RunStore(engine).upsert(
            [
                run("a1", "succeeded", "etl", 10),
                run("a2", "failed", "etl", 20),
                run("a3", "dead", "etl", 30),
                run("a4", "failed", "other", 40),
                run("a5", "cancelled", "etl", 40),  # neither success nor failure
                run("a6", "failed", "etl", 4000),  # outside the window
            ]
        )
        evaluator = _evaluator(engine)
        spec = {"window_seconds": 600, "threshold": 0.5, "min_runs": 3}
        verdict = evaluator._failure_rate({**spec, "pipeline": "etl"})
        assert verdict is not None
        active, summary, details = verdict
        assert active and details["runs"] == 3 and details["failed"] == 2
        assert "2 of 3 runs of etl failed" in summary

        def judged(rule: dict[str, Any]) -> tuple[bool, dict[str, Any]]:
            verdict = evaluator._failure_rate(rule)
            assert verdict is not None
            return verdict[0], verdict[2]

        active, details = judged(spec)
        assert active and details["runs"] == 4 and details["failed"] == 3
        assert not judged({**spec, "min_runs": 5})[0]
        assert not judged({**spec, "threshold": 0.8})[0]
    finally:
        engine.dispose()


def test_schedule_missed_sees_overdue_ticks_and_failed_ticks(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        migrate(engine)
        now_ms = int(time.time() * 1000)
        rows = [
            {"id": "late", "name": "late", "next_tick_ms": now_ms - 120_000, "paused": False},
            {"id": "fine", "name": "fine", "next_tick_ms": now_ms + 60_000, "paused": False},
            {"id": "held", "name": "held", "next_tick_ms": now_ms - 999_000, "paused": True},
            {
                "id": "err",
                "name": "err",
                "next_tick_ms": now_ms + 60_000,
                "paused": False,
                "last_error": "PipelineNotFoundError: gone",
            },
        ]
        with engine.begin() as conn:
            for row in rows:
                conn.execute(
                    insert(schedules).values(
                        spec="{}", version=0, created_ms=now_ms, updated_ms=now_ms, **row
                    )
                )
        evaluator = _evaluator(engine)
        verdict = evaluator._schedule_missed({"grace_seconds": 60}, None)
        assert verdict is not None
        active, summary, details = verdict
        assert "late" in summary
        assert active and set(details["schedules"]) == {"late", "err"}
        assert "gone" in details["schedules"]["err"]["error"]
        assert "overdue_since" in details["schedules"]["late"]
        one = evaluator._schedule_missed({"grace_seconds": 60, "schedule_id": "fine"}, None)
        assert one is not None and one[0] is False
        lenient = evaluator._schedule_missed({"grace_seconds": 600, "schedule_id": "late"}, None)
        assert lenient is not None and lenient[0] is False
    finally:
        engine.dispose()
