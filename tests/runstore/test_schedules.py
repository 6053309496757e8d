"""Schedules: fire times (DST transitions included), validation, and their tables on
SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError
from sqlalchemy import Engine, inspect

from mimir.core.runstore.schedules import (
    ScheduleExistsError,
    ScheduleIn,
    ScheduleNotFoundError,
    ScheduleStore,
    TriggerIn,
    TriggerNotFoundError,
    TriggerStore,
    jitter_seconds,
    next_fire,
    next_fires,
    schedules,
    tick_key,
    triggers,
)

BERLIN = ZoneInfo("Europe/Berlin")


def spec(**fields: Any) -> ScheduleIn:
    return ScheduleIn.model_validate({"name": "s", "pipeline_name": "p", **fields})


def local(moments: list[datetime]) -> list[str]:
    return [m.astimezone(BERLIN).strftime("%Y-%m-%d %H:%M%z") for m in moments]


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_wall_clock_cron_across_spring_forward_neither_skips_nor_doubles() -> None:
    # 2026-03-29 02:00 CET -> 03:00 CEST: 02:30 does not exist that night.
    fires = next_fires(spec(cron="30 2 * * *", timezone="Europe/Berlin"), utc(2026, 3, 27), 4)
    assert local(fires) == [
        "2026-03-27 02:30+0100",
        "2026-03-28 02:30+0100",
        "2026-03-29 03:30+0200",  # once, as far past the change as it was meant
        "2026-03-30 02:30+0200",
    ]


def test_wall_clock_cron_across_fall_back_neither_skips_nor_doubles() -> None:
    # 2026-10-25 03:00 CEST -> 02:00 CET: 02:30 happens twice that night.
    fires = next_fires(spec(cron="30 2 * * *", timezone="Europe/Berlin"), utc(2026, 10, 23), 4)
    assert local(fires) == [
        "2026-10-23 02:30+0200",
        "2026-10-24 02:30+0200",
        "2026-10-25 02:30+0200",  # the first 02:30 only
        "2026-10-26 02:30+0100",
    ]
    # Asked from inside the repeated hour, after its first 02:30: the next is the next day.
    after = datetime(2026, 10, 25, 2, 45, tzinfo=BERLIN, fold=1)
    assert local([next_fire(spec(cron="30 2 * * *", timezone="Europe/Berlin"), after)]) == [
        "2026-10-26 02:30+0100"
    ]


def test_seconds_field_and_every_hour_across_both_changes() -> None:
    # A 6-field expression (seconds first) at a wall time: the same as the 5-field one.
    six = next_fires(spec(cron="0 30 2 * * *", timezone="Europe/Berlin"), utc(2026, 3, 27), 4)
    five = next_fires(spec(cron="30 2 * * *", timezone="Europe/Berlin"), utc(2026, 3, 27), 4)
    assert six == five
    hourly = spec(cron="0 * * * *", timezone="Europe/Berlin")
    # Every hour is every real hour: one fewer wall hour in spring, one more in autumn.
    spring = next_fires(hourly, utc(2026, 3, 28, 23), 3)
    assert local(spring) == [
        "2026-03-29 01:00+0100",
        "2026-03-29 03:00+0200",
        "2026-03-29 04:00+0200",
    ]
    assert [b - a for a, b in pairwise(spring)] == [timedelta(hours=1)] * 2
    autumn = next_fires(hourly, utc(2026, 10, 24, 23), 4)
    assert local(autumn) == [
        "2026-10-25 02:00+0200",
        "2026-10-25 02:00+0100",
        "2026-10-25 03:00+0100",
        "2026-10-25 04:00+0100",
    ]
    every_second = next_fires(spec(cron="*/20 * * * * *"), utc(2026, 6, 1), 3)
    assert [m.second for m in every_second] == [20, 40, 0]


def test_interval_start_and_end() -> None:
    created = utc(2026, 1, 1, 12, 0, 0)
    every = spec(interval="1m30s")
    assert next_fires(every, created, 3, created) == [
        created + timedelta(seconds=90 * k) for k in (1, 2, 3)
    ]
    # Ticks count from start_at; nothing before it, nothing after end_at.
    bounded = spec(
        interval="10m", start_at="2026-02-01T00:05:00Z", end_at="2026-02-01T00:30:00+00:00"
    )
    assert next_fires(bounded, created, 10, created) == [
        utc(2026, 2, 1, 0, 5),
        utc(2026, 2, 1, 0, 15),
        utc(2026, 2, 1, 0, 25),
    ]
    assert next_fire(bounded, utc(2026, 2, 1, 0, 26), created) is None
    cron = spec(cron="0 0 * * *", start_at="2026-05-01T00:00:00Z")
    assert next_fire(cron, created) == utc(2026, 5, 1)


def test_jitter_and_keys_are_the_same_on_every_server() -> None:
    assert jitter_seconds("a", 1000, 0) == 0
    values = {jitter_seconds("a", tick, 30) for tick in range(0, 100_000, 1000)}
    assert all(0 <= v <= 30 for v in values) and len(values) > 50
    assert jitter_seconds("a", 5000, 30) == jitter_seconds("a", 5000, 30)
    assert tick_key("abc", 1700000000000) == "schedule:abc:1700000000000"


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"cron": "60 * * * *"}, "cron"),
        ({"cron": "* * * * * * *"}, "cron"),
        ({"cron": "0 0 31 2 mon-fry"}, "cron"),
        ({"interval": "5 minutes"}, "interval"),
        ({"interval": "0s"}, "interval"),
        ({"interval": "1m", "timezone": "Europe/Nowhere"}, "timezone"),
        ({"interval": "1m", "timezone": "../../etc/passwd"}, "timezone"),
        ({"interval": "1m", "cron": "* * * * *"}, None),
        ({}, None),
        ({"interval": "1m", "start_at": "2026-01-02T00:00Z", "end_at": "2026-01-01T00:00Z"}, None),
        ({"interval": "1m", "jitter": -1}, "jitter"),
        ({"interval": "1m", "timeout": "0s"}, "timeout"),
    ],
)  # fmt: skip
def test_invalid_schedules_name_the_field(fields: dict[str, Any], field: str | None) -> None:
    with pytest.raises(ValidationError) as caught:
        spec(**fields)
    (error,) = caught.value.errors()
    assert error["loc"] == ((field,) if field else ())


def test_migration_creates_exactly_the_module_tables(engine: Engine) -> None:
    inspector = inspect(engine)
    for table in (schedules, triggers):
        columns = {c["name"]: c for c in inspector.get_columns(table.name)}
        assert list(columns) == [c.name for c in table.columns]
        for column in table.columns:
            found = columns[column.name]
            assert found["nullable"] == column.nullable, (table.name, column.name)
            assert found["type"].python_type is column.type.python_type, column.name
        assert inspector.get_pk_constraint(table.name)["constrained_columns"] == ["id"]
        assert {u["name"] for u in inspector.get_unique_constraints(table.name)} == {
            f"uq_{table.name}_name"
        }
    indexes = {
        i["name"]: i["column_names"]
        for i in inspector.get_indexes("schedules")
        if not i["name"].startswith("uq_")  # PostgreSQL lists the unique constraint's index
    }
    assert indexes == {"ix_schedules_due": ["paused", "next_tick_ms"]}


def test_schedule_store_and_conditional_advance(engine: Engine) -> None:
    store = ScheduleStore(engine)
    row = store.create(spec(name="a", interval="1s", context={"k": [1, 2]}))
    assert row.state == "active" and row.next_tick_ms == row.created_ms + 1000
    assert store.get(row.id).spec.context == {"k": [1, 2]}
    assert store.find("a").id == row.id
    with pytest.raises(ScheduleExistsError):
        store.create(spec(name="a", interval="1s"))
    assert [r.id for r in store.due(row.created_ms + 1000)] == [row.id]
    assert store.due(row.created_ms + 999) == []
    # Two servers read the same row: one moves it on, the other finds it moved.
    assert store.advance(
        row, row.next_tick_ms + 1000, last_tick_ms=row.next_tick_ms, last_job_id="j1",
        last_error=None,
    )  # fmt: skip
    assert not store.advance(
        row, row.next_tick_ms + 1000, last_tick_ms=row.next_tick_ms, last_job_id="j2",
        last_error=None,
    )  # fmt: skip
    moved = store.get(row.id)
    assert moved.last_job_id == "j1" and moved.next_tick_ms == row.next_tick_ms + 1000
    # A change through the API (version + 1) beats a scheduler holding the old row.
    paused = store.set_paused(row.id, True)
    assert paused.state == "paused" and store.due(10**15) == []
    assert not store.advance(moved, 1, last_tick_ms=None, last_job_id=None, last_error=None)
    resumed = store.set_paused(row.id, False)
    assert resumed.state == "active" and resumed.next_tick_ms is not None
    replaced = store.replace(row.id, spec(name="b", cron="0 0 1 1 *"))
    assert replaced.spec.cron == "0 0 1 1 *" and replaced.version == resumed.version + 1
    assert [r.spec.name for r in store.list()] == ["b"]
    ended = store.create(spec(name="old", interval="1m", end_at="2020-01-01T00:00:00Z"))
    assert ended.state == "ended" and ended.next_tick_ms is None
    store.delete(row.id)
    with pytest.raises(ScheduleNotFoundError):
        store.get(row.id)
    with pytest.raises(ScheduleNotFoundError):
        store.delete(row.id)


def test_trigger_store(engine: Engine) -> None:
    store = TriggerStore(engine)
    row = store.create(TriggerIn(name="t", pipeline_name="p", rate_limit=5))
    assert len(row.secret) >= 40
    other = store.create(TriggerIn(name="u", pipeline_name="p"))
    assert other.secret != row.secret and other.spec.rate_limit == 60
    assert store.get(row.id).secret == row.secret
    assert [t.spec.name for t in store.list()] == ["t", "u"]
    store.delete(row.id)
    with pytest.raises(TriggerNotFoundError):
        store.get(row.id)
