"""Schedules over HTTP with real processes: servers sharing one database, Redis, a worker.

Jobs are counted through the queue API by their idempotency key
(``schedule:{id}:{tick_ms}``, one key per tick), so a tick enqueued twice would show as
two jobs only if two keys were made for it, and a missed or doubled tick shows in the
ticks' times.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx

from tests.helpers import RedisServer, ServerProcess, WorkerProcess, wait_until

PIPELINE = {"pipeline_file": "test_pipeline.yaml", "context": {"input": "scheduled"}}


def _schedule(client: httpx.Client, **body: Any) -> dict[str, Any]:
    answer = client.post("/api/v1/schedules", json={**PIPELINE, **body})
    assert answer.status_code == 201, answer.text
    created: dict[str, Any] = answer.json()
    return created


def _ticks(client: httpx.Client, schedule_id: str) -> list[int]:
    """Tick times (ms) of the jobs the schedule's ticks enqueued, sorted; run-now excluded."""
    records = client.get("/api/v1/queue/jobs", params={"limit": 1000}).json()["jobs"]
    ticks = []
    for record in records:
        key = record.get("idempotency_key") or ""
        if key.startswith(f"schedule:{schedule_id}:") and "run-now" not in key:
            ticks.append(int(key.rsplit(":", 1)[1]))
    return sorted(ticks)


def _created_ms(schedule: dict[str, Any]) -> int:
    return int(datetime.fromisoformat(schedule["created_at"]).timestamp() * 1000)


def test_two_servers_fire_each_tick_of_a_1s_schedule_once(
    make_server: Callable[..., ServerProcess], redis_server: RedisServer, database_url: str
) -> None:
    # Both servers on one database (a SQLite file in WAL mode, or PostgreSQL), one Redis.
    first = make_server(redis_url=redis_server.url, MIMIR_DATABASE_URL=database_url).start()
    second = make_server(redis_url=redis_server.url, MIMIR_DATABASE_URL=database_url).start()
    with (
        httpx.Client(base_url=first.base_url, timeout=30) as a,
        httpx.Client(base_url=second.base_url, timeout=30) as b,
    ):
        schedule = _schedule(a, name="every-second", interval="1s")
        sid, created = schedule["id"], _created_ms(schedule)
        assert b.get(f"/api/v1/schedules/{sid}").json()["state"] == "active"
        window_end = created + 20_000
        wait_until(
            lambda: len([t for t in _ticks(b, sid) if t <= window_end]) >= 20,
            timeout=40,
            interval=0.5,
        )
        assert b.post(f"/api/v1/schedules/{sid}/pause").json()["state"] == "paused"
        ticks = _ticks(a, sid)
    in_window = [t for t in ticks if t <= window_end]
    assert len(in_window) == len(set(in_window))  # no tick twice
    assert 19 <= len(in_window) <= 21, in_window
    assert in_window == [created + 1000 * k for k in range(1, len(in_window) + 1)]


def test_misfire_skip_and_run_once_after_downtime(
    make_server: Callable[..., ServerProcess], redis_server: RedisServer
) -> None:
    server = make_server(redis_url=redis_server.url).start()
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        skip = _schedule(client, name="skip", interval="1s", misfire="skip")
        once = _schedule(client, name="once", interval="1s", misfire="run_once")
        wait_until(
            lambda: len(_ticks(client, skip["id"])) >= 2 and len(_ticks(client, once["id"])) >= 2,
            timeout=20,
        )
        server.stop(signal.SIGTERM)
        before = {s["id"]: _ticks_after_stop(redis_server, s["id"]) for s in (skip, once)}
        stopped_at = time.time()
        # Down for 12 s: ticks older than the 5 s grace are missed.
        wait_until(lambda: time.time() - stopped_at > 12, timeout=20, interval=0.2)
        server.start()
        restarted = time.time() * 1000
        # The schedules survived the restart.
        names = {s["name"]: s for s in client.get("/api/v1/schedules").json()}
        assert names["skip"]["state"] == names["once"]["state"] == "active"
        wait_until(
            lambda: all(any(t >= restarted for t in _ticks(client, s["id"])) for s in (skip, once)),
            timeout=20,
        )
        skip_ticks = _ticks(client, skip["id"])
        once_ticks = _ticks(client, once["id"])
    last_skip = max(before[skip["id"]])
    after_skip = [t for t in skip_ticks if t > last_skip]
    # skip: nothing for the missed ticks; the next run is at least the grace later.
    assert after_skip[0] - last_skip >= 5000, (last_skip, after_skip[:5])
    last_once = max(before[once["id"]])
    after_once = [t for t in once_ticks if t > last_once]
    # run_once: one run for the missed ticks (keyed by the first one), then a gap.
    assert after_once[0] == last_once + 1000, (last_once, after_once[:5])
    assert after_once[1] - after_once[0] >= 5000, after_once[:5]


def _ticks_after_stop(redis_server: RedisServer, schedule_id: str) -> list[int]:
    """Ticks enqueued before the stop, read from Redis (the API is down)."""
    import redis

    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        ticks = []
        for job_id in client.zrange("mimir:jobs", 0, -1):
            key = client.hget(f"mimir:job:{job_id}", "idempotency_key") or ""
            if key.startswith(f"schedule:{schedule_id}:") and "run-now" not in key:
                ticks.append(int(key.rsplit(":", 1)[1]))
        return sorted(ticks)
    finally:
        client.close()


def test_overlap_skip_waits_for_the_previous_run(
    make_server: Callable[..., ServerProcess], redis_server: RedisServer, tmp_path: Any
) -> None:
    server = make_server(redis_url=redis_server.url).start()
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        schedule = _schedule(client, name="no-overlap", interval="1s", overlap="skip")
        sid = schedule["id"]
        wait_until(lambda: len(_ticks(client, sid)) >= 1, timeout=15)
        first_job = client.get(f"/api/v1/schedules/{sid}").json()["last_job_id"]
        # No worker: the first job stays queued, so the next ticks fire nothing.
        started = time.time()
        wait_until(lambda: time.time() - started > 3.5, timeout=10, interval=0.2)
        assert len(_ticks(client, sid)) == 1
        assert client.get(f"/api/v1/schedules/{sid}").json()["last_job_id"] == first_job
        worker = WorkerProcess(
            {"REDIS_URL": redis_server.url}, concurrency=1, log_path=tmp_path / "worker.log"
        ).start()
        try:
            # Once it has run, the next tick fires again.
            wait_until(
                lambda: client.get(f"/api/v1/schedules/{sid}").json()["last_job_id"] != first_job,
                timeout=30,
            )
        finally:
            client.post(f"/api/v1/schedules/{sid}/pause")
            worker.stop()


def test_pause_resume_run_now_put_delete(api_client: httpx.Client) -> None:
    schedule = _schedule(api_client, name="hourly", cron="0 * * * *", timezone="Europe/Berlin")
    sid = schedule["id"]
    assert schedule["state"] == "active"
    assert len(schedule["next_runs"]) == 5
    assert schedule["next_run"] == schedule["next_runs"][0]
    assert schedule["last_run"] is None
    assert schedule["spec"]["cron"] == "0 * * * *"
    paused = api_client.post(f"/api/v1/schedules/{sid}/pause").json()
    assert paused["state"] == "paused" and paused["next_runs"] == []
    # run-now enqueues even while paused, under a key of its own.
    answer = api_client.post(f"/api/v1/schedules/{sid}/run-now")
    assert answer.status_code == 202, answer.text
    job = api_client.get(f"/api/v1/queue/jobs/{answer.json()['job_id']}").json()
    assert job["idempotency_key"].startswith(f"schedule:{sid}:run-now:")
    assert job["pipeline"] == "test-pipeline"
    again = api_client.post(f"/api/v1/schedules/{sid}/run-now").json()["job_id"]
    assert again != job["job_id"]
    assert api_client.get(f"/api/v1/schedules/{sid}").json()["last_job_id"] == again
    resumed = api_client.post(f"/api/v1/schedules/{sid}/resume").json()
    assert resumed["state"] == "active"
    assert datetime.fromisoformat(resumed["next_run"]) > datetime.now(UTC)
    # PUT replaces the definition.
    replaced = api_client.put(
        f"/api/v1/schedules/{sid}", json={**PIPELINE, "name": "daily", "cron": "30 2 * * *"}
    )
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["name"] == "daily"
    assert replaced.json()["next_runs"][0].endswith("T02:30:00Z")
    listed = api_client.get("/api/v1/schedules").json()
    assert [s["name"] for s in listed] == ["daily"]
    assert api_client.get(f"/api/v1/schedules/{sid}/runs").json() == []
    assert api_client.delete(f"/api/v1/schedules/{sid}").status_code == 204
    assert api_client.get(f"/api/v1/schedules/{sid}").status_code == 404
    assert api_client.post(f"/api/v1/schedules/{sid}/pause").status_code == 404


def test_end_at_in_the_past_is_ended_and_preview(api_client: httpx.Client) -> None:
    schedule = _schedule(
        api_client,
        name="over",
        interval="1m",
        start_at="2020-01-01T00:00:00Z",
        end_at="2020-01-02T00:00:00Z",
    )
    assert schedule["state"] == "ended" and schedule["next_runs"] == []
    preview = api_client.post(
        "/api/v1/schedules/preview",
        json={"name": "p", "pipeline_name": "x", "cron": "30 2 * * *", "timezone": "Asia/Tokyo"},
    )
    assert preview.status_code == 200, preview.text
    assert all(t.endswith("T17:30:00Z") for t in preview.json()["next_runs"])


BAD_SCHEDULES: list[tuple[dict[str, Any], str]] = [
    ({"cron": "61 * * * *"}, "cron"),
    ({"cron": "* * *"}, "cron"),
    ({"cron": "not a cron"}, "cron"),
    ({"cron": "0 * * * *", "timezone": "Mars/Olympus_Mons"}, "timezone"),
    ({"interval": "soon"}, "interval"),
    ({"interval": "500ms"}, "interval"),
    ({"cron": "0 * * * *", "interval": "1m"}, "body"),
    ({}, "body"),
    ({"interval": "1m", "misfire": "later"}, "misfire"),
    ({"interval": "1m", "overlap": "maybe"}, "overlap"),
    # JSON that is not text where a duration goes (was a 500 from the fuzzer)
    ({"interval": "1m", "timeout": {"s": 1}}, "timeout"),
    ({"interval": "1m", "timeout": ["1s"]}, "timeout"),
    ({"interval": {"s": 60}}, "interval"),
]


def test_bad_schedules_are_422_naming_the_field(api_client: httpx.Client) -> None:
    for body, field in BAD_SCHEDULES:
        answer = api_client.post("/api/v1/schedules", json={**PIPELINE, "name": "bad", **body})
        assert answer.status_code == 422, (body, answer.text)
        error = answer.json()
        assert [problem["field"] for problem in error["detail"]] == [field], (body, error)
        assert field in error["error"]
    assert api_client.get("/api/v1/schedules").json() == []


def test_unknown_pipeline_and_duplicate_name(api_client: httpx.Client) -> None:
    missing = api_client.post(
        "/api/v1/schedules", json={"name": "x", "pipeline_name": "nope", "interval": "1m"}
    )
    assert missing.status_code == 404, missing.text
    _schedule(api_client, name="twice", interval="1h")
    clash = api_client.post(
        "/api/v1/schedules", json={**PIPELINE, "name": "twice", "interval": "1h"}
    )
    assert clash.status_code == 409
    assert "twice" in clash.json()["error"]


def test_scheduled_and_triggered_runs_reach_the_run_store(
    make_server: Callable[..., ServerProcess], redis_server: RedisServer, tmp_path: Any
) -> None:
    server = make_server(redis_url=redis_server.url).start()
    worker = WorkerProcess(
        {"REDIS_URL": redis_server.url}, concurrency=2, log_path=tmp_path / "worker.log"
    ).start()
    try:
        with httpx.Client(base_url=server.base_url, timeout=30) as client:
            schedule = _schedule(client, name="stored", interval="1s", overlap="skip")
            sid = schedule["id"]

            def last_run() -> Any:
                return client.get(f"/api/v1/schedules/{sid}").json()["last_run"]

            wait_until(lambda: last_run() is not None, timeout=30, interval=0.3)
            client.post(f"/api/v1/schedules/{sid}/pause")
            run = last_run()
            assert run["status"] == "succeeded", run
            assert (run["origin_kind"], run["origin_id"]) == ("schedule", sid)
            history = client.get(f"/api/v1/schedules/{sid}/runs").json()
            assert history and all(r["origin_id"] == sid for r in history)
            stored = client.get(f"/api/v1/runs/{run['job_id']}").json()
            assert stored["context"] == {"input": "scheduled"}

            trigger = client.post(
                "/api/v1/triggers",
                json={
                    "name": "t",
                    "pipeline_file": "test_pipeline.yaml",
                    "context": {"input": "x"},
                },
            ).json()
            hooked = httpx.post(
                f"{server.base_url}{trigger['hook']}",
                json={"event": "push"},
                headers={"Authorization": f"Bearer {trigger['secret']}", "X-Mimir-Delivery": "x1"},
            )
            assert hooked.status_code == 202, hooked.text
            job_id = hooked.json()["job_id"]

            def trigger_run() -> Any:
                answer = client.get(f"/api/v1/runs/{job_id}")
                return answer.json() if answer.status_code == 200 else None

            wait_until(lambda: trigger_run() is not None, timeout=30, interval=0.3)
            triggered = trigger_run()
            assert (triggered["origin_kind"], triggered["origin_id"]) == ("trigger", trigger["id"])
            assert triggered["context"]["payload"] == {"event": "push"}
    finally:
        worker.stop()
