"""Finished jobs become runs: the server's ingest of the queue's outcome stream, with real
redis-server, server and worker processes (and PostgreSQL for the shared-database case).

The first tests write outcome entries themselves (as the queue's scripts write them), so
that what the ingest must do with entries written while no server ran, entries a killed
server had taken but not acknowledged, and two servers reading one stream, is exact; the
others run real jobs on real workers end to end.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from mimir.core.runstore.db import make_engine
from mimir.core.runstore.runs import RunStore
from tests.helpers import RedisServer, ServerProcess, WorkerProcess, wait_until

PREFIX = "mimir:"
OUTCOMES = f"{PREFIX}outcomes"


def outcome(n: int, status: str = "succeeded") -> dict[str, str]:
    """An outcome stream entry as the queue's scripts write it (record fields as text)."""
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    record = {
        "job_id": f"synthetic{n:05d}",
        "type": "pipeline",
        "status": status,
        "priority": "normal",
        "queue": "default",
        "attempts": "1",
        "max_retries": "2",
        "pipeline": "synthetic",
        "enqueued_at": now,
        "started_at": now,
        "finished_at": now,
        "worker_id": "worker-test",
        "result": json.dumps({"n": n}),
    }
    detail = {
        "steps": [{"index": 0, "name": "only", "plugin": "Debug.echo", "status": status,
                   "duration_ms": 1.0, "error": None, "started_at": now}],
        "logs": [{"t": now, "level": "INFO", "step": "only", "msg": f"line of {n}"}],
        "logs_truncated": False,
        "artifacts": [],
    }  # fmt: skip
    return {"job": record["job_id"], "record": json.dumps(record), "detail": json.dumps(detail)}


def add_outcomes(client: redis.Redis, first: int, count: int) -> None:
    pipe = client.pipeline(transaction=False)
    for n in range(first, first + count):
        pipe.xadd(OUTCOMES, outcome(n))  # type: ignore[arg-type]
    pipe.execute()


def stored_count(base_url: str) -> int:
    answer = httpx.get(f"{base_url}/api/v1/runs/status", timeout=10)
    answer.raise_for_status()
    return int(answer.json()["runs"])


def db_figures(url: str) -> tuple[int, int]:
    """Rows in ``runs`` and distinct job ids among them."""
    from sqlalchemy import text

    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(text("SELECT count(*), count(DISTINCT job_id) FROM runs"))
            total, distinct = rows.one()
            return int(total), int(distinct)
    finally:
        engine.dispose()


@pytest.fixture
def rclient(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    yield client
    client.close()


def test_outcomes_from_before_the_first_start_and_a_dead_consumers_are_stored_once(
    make_server: Callable[..., ServerProcess],
    redis_server: RedisServer,
    rclient: redis.Redis,
    data_dir: Path,
) -> None:
    # 300 outcomes before any server ran (no group yet: it must start from the first) ...
    add_outcomes(rclient, 0, 300)
    # ... then a server that took 200 of them and died before acknowledging any.
    rclient.xgroup_create(OUTCOMES, "runstore", id="0", mkstream=True)
    taken = rclient.xreadgroup("runstore", "dead-server", {OUTCOMES: ">"}, count=200)
    assert len(taken[0][1]) == 200
    server = make_server(redis_url=redis_server.url, MIMIR_INGEST_CLAIM_IDLE="1").start()
    wait_until(lambda: stored_count(server.base_url) == 300, timeout=60, message="300 runs")
    add_outcomes(rclient, 300, 200)  # and what comes while it runs
    wait_until(lambda: stored_count(server.base_url) == 500, timeout=60, message="500 runs")
    wait_until(lambda: rclient.xlen(OUTCOMES) == 0, timeout=10, message="entries deleted")
    assert rclient.xpending(OUTCOMES, "runstore")["pending"] == 0
    assert db_figures(f"sqlite:///{data_dir / 'mimir.db'}") == (500, 500)
    run = httpx.get(f"{server.base_url}/api/v1/runs/synthetic00007").json()
    assert run["result"] == {"n": 7} and run["steps"][0]["name"] == "only"
    logs = httpx.get(f"{server.base_url}/api/v1/runs/synthetic00007/logs").json()
    assert [line["msg"] for line in logs["lines"]] == ["line of 7"]
    status = httpx.get(f"{server.base_url}/api/v1/runs/status").json()
    assert status["ingest"]["pending"] == 0 and status["ingest"]["stream_length"] == 0


def test_ingest_survives_a_redis_restart(
    make_server: Callable[..., ServerProcess], redis_server: RedisServer, data_dir: Path
) -> None:
    server = make_server(redis_url=redis_server.url).start()
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    add_outcomes(client, 0, 50)
    wait_until(lambda: stored_count(server.base_url) == 50, timeout=30, message="50 runs")
    client.close()
    redis_server.restart()
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        add_outcomes(client, 50, 50)
        wait_until(lambda: stored_count(server.base_url) == 100, timeout=60, message="100 runs")
    finally:
        client.close()
    assert server.process is not None and server.process.poll() is None


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_two_servers_on_one_database_store_each_run_once(
    make_server: Callable[..., ServerProcess],
    redis_server: RedisServer,
    rclient: redis.Redis,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    backend: str,
) -> None:
    url = database(backend, request, tmp_path)
    servers = [
        make_server(redis_url=redis_server.url, MIMIR_DATABASE_URL=url).start() for _ in range(2)
    ]
    for first in range(0, 2000, 250):  # while both read
        add_outcomes(rclient, first, 250)
        time.sleep(0.05)
    wait_until(lambda: stored_count(servers[0].base_url) == 2000, timeout=120, message="2000")
    assert db_figures(url) == (2000, 2000)
    stored = [
        httpx.get(f"{s.base_url}/api/v1/runs/status").json()["ingest"]["stored"] for s in servers
    ]
    assert sum(stored) == 2000, stored  # each entry went to one server
    consumers = rclient.xinfo_consumers(OUTCOMES, "runstore")
    assert len(consumers) == 2


# -- real jobs on real workers ----------------------------------------------------------

LOGGING_PIPELINE = {
    "name": "writes-a-file",
    "steps": [
        {"name": "make", "plugin": "Debug.echo", "config": {"value": {"rows": [1, 2, 3]}},
         "output": "made"},
        {"name": "save", "plugin": "Output.json",
         "config": {"input": "{{ made }}", "file_path": "out/{{ tag }}.json"}},
    ],
}  # fmt: skip

SLOW_PIPELINE = {
    "name": "slow-logger",
    "steps": [
        {"name": f"step{i}", "plugin": "Debug.sleep", "config": {"seconds": 0.5}} for i in range(8)
    ],
}


def enqueue(client: httpx.Client, pipeline: dict[str, Any], **context: Any) -> str:
    answer = client.post(
        "/api/v1/queue/pipelines/enqueue", json={"pipeline": pipeline, "context": context}
    )
    assert answer.status_code == 202, answer.text
    return str(answer.json()["job_id"])


def test_a_job_whose_redis_record_is_gone_is_still_found(
    make_server: Callable[..., ServerProcess],
    redis_server: RedisServer,
    rclient: redis.Redis,
    data_dir: Path,
    tmp_path: Path,
) -> None:
    """ "Finished 25 hours ago": the job TTL is 3 s, so Redis lets the record go (released
    by the ingest, or expired) and every answer comes from the run store."""
    server = make_server(redis_url=redis_server.url, MIMIR_JOB_TTL="3").start()
    worker = WorkerProcess(
        {"REDIS_URL": redis_server.url, "MIMIR_DATA_DIR": str(data_dir), "MIMIR_JOB_TTL": "3"},
        log_path=tmp_path / "worker.log",
    ).start()
    try:
        with httpx.Client(base_url=server.base_url, timeout=30) as client:
            job_id = enqueue(client, LOGGING_PIPELINE, tag="day-old")
            done = client.get(f"/api/v1/queue/jobs/{job_id}/wait", params={"timeout": "30s"})
            assert done.json()["status"] == "succeeded", done.text
            wait_until(
                lambda: not rclient.exists(f"{PREFIX}job:{job_id}"),
                timeout=30,
                message="the job's Redis record to go",
            )
            run = client.get(f"/api/v1/runs/{job_id}")
            assert run.status_code == 200, run.text
            body = run.json()
            assert body["status"] == "succeeded" and body["pipeline"] == "writes-a-file"
            assert [s["name"] for s in body["steps"]] == ["make", "save"]
            assert all(s["status"] == "succeeded" for s in body["steps"])
            assert body["definition"]["name"] == "writes-a-file"
            assert body["context"]["tag"] == "day-old"
            logs = client.get(f"/api/v1/runs/{job_id}/logs").json()
            assert logs["lines"], logs
            artifacts = client.get(f"/api/v1/runs/{job_id}/artifacts").json()["artifacts"]
            assert [a["name"] for a in artifacts] == ["out/day-old.json"]
            file = client.get(f"/api/v1/runs/{job_id}/artifacts/out/day-old.json")
            assert file.status_code == 200
            assert hashlib.sha256(file.content).hexdigest() == artifacts[0]["sha256"]
            assert file.content == (data_dir / "out" / "day-old.json").read_bytes()
            job = client.get(f"/api/v1/queue/jobs/{job_id}")
            assert job.status_code == 200, job.text
            assert job.json()["status"] == "succeeded" and job.json()["job_id"] == job_id
            waited = client.get(f"/api/v1/queue/jobs/{job_id}/wait", params={"timeout": "1s"})
            assert waited.status_code == 200 and waited.json()["timed_out"] is False
            listed = client.get("/api/v1/queue/jobs").json()
            assert job_id in [j["job_id"] for j in listed["jobs"]]
    finally:
        worker.kill()


def wait_jobs_final(client: redis.Redis, count: int, timeout: float) -> None:
    def ended() -> bool:
        totals = client.hgetall(f"{PREFIX}totals")
        return sum(int(v) for v in totals.values()) >= count

    wait_until(ended, timeout=timeout, interval=0.2, message=f"{count} jobs to end")


def database(backend: str, request: pytest.FixtureRequest, data_dir: Path) -> str:
    """The run store's URL for ``backend``: the server's own SQLite file, or a fresh
    PostgreSQL database (dropped after the test)."""
    if backend == "sqlite":
        return f"sqlite:///{data_dir / 'mimir.db'}"
    from tests.pg import create_database, drop_database

    url = create_database(request.getfixturevalue("postgres_url"))
    request.addfinalizer(lambda: drop_database(url))
    return url


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_500_jobs_end_while_the_server_is_down_and_all_are_stored_once(
    make_server: Callable[..., ServerProcess],
    redis_server: RedisServer,
    rclient: redis.Redis,
    data_dir: Path,
    pipelines_dir: Path,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    backend: str,
) -> None:
    url = database(backend, request, data_dir)
    options = {"MIMIR_INGEST_CLAIM_IDLE": "2", "MIMIR_DATABASE_URL": url}
    (pipelines_dir / "quick.yaml").write_text(
        "name: quick\nsteps:\n  - name: echo\n    plugin: Debug.echo\n    config:\n"
        "      value: hi\n"
    )
    first = make_server(redis_url=redis_server.url, **options).start()
    worker = WorkerProcess(
        {"REDIS_URL": redis_server.url, "MIMIR_DATA_DIR": str(data_dir)},
        concurrency=20,
        log_path=tmp_path / "worker.log",
    ).start()
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MIMIR_")}
        env["REDIS_URL"] = redis_server.url
        enqueued = subprocess.run(
            [sys.executable, "-m", "mimir.core.cli", "enqueue", str(pipelines_dir / "quick.yaml"),
             "--count", "500"],
            env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert enqueued.returncode == 0, enqueued.stderr
        # The server dies while the jobs end (likely in the middle of a batch).
        wait_until(lambda: stored_count(first.base_url) > 0, timeout=30, message="the first runs")
        first.stop(signal.SIGKILL)
        wait_jobs_final(rclient, 500, timeout=120)
        second = make_server(redis_url=redis_server.url, **options).start()
        wait_until(lambda: stored_count(second.base_url) == 500, timeout=120, message="500 runs")
        wait_until(
            lambda: (
                rclient.xlen(OUTCOMES) == 0
                and rclient.xpending(OUTCOMES, "runstore")["pending"] == 0
            ),
            timeout=30,
            message="every outcome acknowledged",
        )
        assert stored_count(second.base_url) == 500
        assert db_figures(url) == (500, 500)
        runs = httpx.get(
            f"{second.base_url}/api/v1/runs", params={"pipeline": "quick", "limit": 1000}
        ).json()["runs"]
        assert len(runs) == 500 and {r["status"] for r in runs} == {"succeeded"}
    finally:
        worker.kill()


def test_logs_follow_streams_a_running_jobs_lines_then_ends(
    make_server: Callable[..., ServerProcess],
    redis_server: RedisServer,
    data_dir: Path,
    tmp_path: Path,
) -> None:
    server = make_server(redis_url=redis_server.url).start()
    worker = WorkerProcess(
        {"REDIS_URL": redis_server.url, "MIMIR_DATA_DIR": str(data_dir)},
        log_path=tmp_path / "worker.log",
    ).start()
    try:
        with httpx.Client(base_url=server.base_url, timeout=60) as client:
            job_id = enqueue(client, SLOW_PIPELINE)
            events: list[tuple[float, str, dict[str, Any]]] = []
            with client.stream(
                "GET", f"/api/v1/runs/{job_id}/logs", params={"follow": "true"}
            ) as answer:
                assert answer.status_code == 200
                assert answer.headers["content-type"].startswith("text/event-stream")
                kind = ""
                for line in answer.iter_lines():
                    if line.startswith("event:"):
                        kind = line[6:].strip()
                    elif line.startswith("data:"):
                        events.append((time.time(), kind, json.loads(line[5:])))
            kinds = [kind for _, kind, _ in events]
            assert kinds[-1] == "end" and kinds.count("end") == 1, kinds
            assert events[-1][2]["status"] == "succeeded"
            lines = [data for _, kind, data in events if kind == "line"]
            assert len(lines) >= 2, events
            run = client.get(f"/api/v1/runs/{job_id}").json()
            finished = datetime.fromisoformat(run["finished_at"].replace("Z", "+00:00"))
            # Lines came while the job ran (the first well before it ended) ...
            assert events[0][0] < finished.timestamp() - 1.0, (events[0], run["finished_at"])
            # ... and the stream holds what the store kept, each line once.
            stored = client.get(f"/api/v1/runs/{job_id}/logs").json()["lines"]
            assert [line["msg"] for line in lines] == [line["msg"] for line in stored]
    finally:
        worker.kill()


def test_pruning_keeps_the_newest_runs(
    make_server: Callable[..., ServerProcess], redis_server: RedisServer, data_dir: Path
) -> None:
    """``MIMIR_RUN_MAX`` caps the store; the pruner runs in the background."""
    from mimir.server.runs import ingest

    assert ingest.PRUNE_FIRST <= 15
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    add_outcomes(client, 0, 120)
    client.close()
    server = make_server(redis_url=redis_server.url, MIMIR_RUN_MAX="100").start()
    wait_until(
        lambda: httpx.get(f"{server.base_url}/api/v1/runs/status").json()["ingest"]["pruned"] >= 20,
        timeout=60,
        interval=0.5,
        message="the pruner",
    )
    assert stored_count(server.base_url) == 100
    engine = make_engine(f"sqlite:///{data_dir / 'mimir.db'}")
    try:
        assert RunStore(engine).count() == 100
    finally:
        engine.dispose()


def test_follow_of_an_unknown_job_is_404(api_client: httpx.Client) -> None:
    answer = api_client.get("/api/v1/runs/nope/logs", params={"follow": "true"})
    assert answer.status_code == 404
