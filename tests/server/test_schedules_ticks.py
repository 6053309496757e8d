"""Which ticks the scheduler fires for a due schedule (misfire policies), without processes."""

from __future__ import annotations

from mimir.core.runstore.schedules import ScheduleIn, ScheduleRow
from mimir.server.runs.scheduler import due_ticks

CREATED = 1_800_000_000_000  # ms


def row(next_tick_ms: int, **fields: object) -> ScheduleRow:
    spec = ScheduleIn.model_validate({"name": "s", "pipeline_name": "p", **fields})
    return ScheduleRow(
        id="abc",
        spec=spec,
        paused=False,
        next_tick_ms=next_tick_ms,
        last_tick_ms=None,
        last_job_id=None,
        last_error=None,
        version=0,
        created_ms=CREATED,
        updated_ms=CREATED,
    )


def test_on_time_ticks_all_fire() -> None:
    due = row(CREATED + 1000, interval="1s")
    # The scheduler looked 2.5 s late (within the grace): every tick, none missed.
    assert due_ticks(due, CREATED + 3500) == (
        [CREATED + 1000, CREATED + 2000, CREATED + 3000],
        CREATED + 4000,
        None,
    )


def test_misfire_skip_drops_the_missed_ticks() -> None:
    due = row(CREATED + 1000, interval="1s", misfire="skip")
    now = CREATED + 60_000  # a minute down; the last 5 s are within the grace
    fire, following, missed = due_ticks(due, now)
    assert fire == [CREATED + 55_000 + 1000 * k for k in range(6)]
    assert following == CREATED + 61_000
    assert missed == CREATED + 1000


def test_misfire_run_once_runs_once_for_the_missed_ticks() -> None:
    due = row(CREATED + 60_000, interval="1m", misfire="run_once")
    now = CREATED + 3600_000 + 30_000  # down for an hour
    fire, following, missed = due_ticks(due, now)
    assert fire == [CREATED + 60_000]  # one run, keyed by the first missed tick
    assert following == CREATED + 3660_000
    assert missed == CREATED + 60_000


def test_ended_schedule_stops() -> None:
    due = row(CREATED + 1000, interval="1s", end_at="2027-01-15T08:00:02Z")
    end_ms = 1_800_000_002_000  # 2027-01-15T08:00:02Z
    fire, following, _ = due_ticks(due, CREATED + 4000)
    assert fire == [t for t in (CREATED + 1000, CREATED + 2000) if t <= end_ms]
    assert following is None
