"""The run history API and ``mimir runs`` against a real server process.

The runs are written straight into the server's SQLite run store (the database the
server migrated at its start), so each figure the API answers is known in advance; how
finished jobs get there (the outcome stream and its ingest) is tested in
test_runs_ingest.py.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from mimir.core.runstore.db import make_engine
from mimir.core.runstore.models import ArtifactRecord, LogLine, RunIn, StepRecord
from mimir.core.runstore.runs import RunStore
from tests.helpers import RedisServer, ServerProcess


def run(
    n: int,
    *,
    now: datetime | None = None,
    pipeline: str = "etl",
    status: str = "succeeded",
    queue: str = "default",
    minutes_ago: float = 0,
    duration_ms: float = 100.0,
    error: str | None = None,
    **extra: object,
) -> RunIn:
    # Ages count from when the run is made (a time fixed at import ages with the suite).
    finished = (now or datetime.now(UTC)) - timedelta(minutes=minutes_ago)
    started = finished - timedelta(milliseconds=duration_ms)
    return RunIn(
        job_id=f"job{n:04d}",
        pipeline=pipeline,
        status=status,
        queue=queue,
        enqueued_at=started - timedelta(seconds=1),
        started_at=started,
        finished_at=finished,
        duration_ms=duration_ms,
        error=error,
        **extra,  # type: ignore[arg-type]
    )


@pytest.fixture
def server(make_server: Callable[..., ServerProcess], redis_server: RedisServer) -> ServerProcess:
    return make_server(redis_url=redis_server.url).start()


@pytest.fixture
def store(server: ServerProcess, data_dir: Path) -> Iterator[RunStore]:
    engine = make_engine(f"sqlite:///{data_dir / 'mimir.db'}")
    try:
        yield RunStore(engine)
    finally:
        engine.dispose()


@pytest.fixture
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=30.0) as http:
        yield http


@pytest.fixture
def seeded(store: RunStore, data_dir: Path) -> dict[str, object]:
    """120 runs: 100 of etl (every 10th failed) one a minute, 20 of report on queue
    `gpu` (5 cancelled), and one run with steps, logs and an artifact file; ``now`` is
    the moment their ages count from."""
    now = datetime.now(UTC).replace(microsecond=0)
    runs = [
        run(
            i,
            status="failed" if i % 10 == 0 else "succeeded",
            error="disk on fire" if i % 10 == 0 else None,
            minutes_ago=i,
            duration_ms=100.0 + i,
            now=now,
        )
        for i in range(100)
    ]
    runs += [
        run(100 + i, pipeline="report", queue="gpu", minutes_ago=200 + i, now=now,
            status="cancelled" if i < 5 else "succeeded")
        for i in range(20)
    ]  # fmt: skip
    content = b'{"rows": [1, 2, 3]}\n'
    (data_dir / "out").mkdir(exist_ok=True)
    (data_dir / "out" / "result.json").write_bytes(content)
    runs.append(
        run(
            999,
            pipeline="with-files",
            minutes_ago=500,
            now=now,
            steps=[
                StepRecord(
                    index=0, name="load", plugin="Debug.echo", status="succeeded", duration_ms=3.0
                ),
                StepRecord(
                    index=1, name="save", plugin="Output.json", status="succeeded", duration_ms=5.0
                ),
            ],
            artifacts=[
                ArtifactRecord(
                    name="out/result.json",
                    size=len(content),
                    content_type="application/json",
                    sha256=hashlib.sha256(content).hexdigest(),
                    step="save",
                ),
                ArtifactRecord(name="out/gone.csv", size=3, content_type="text/csv"),
            ],
            logs=[
                LogLine(t=now, level="INFO", step="load", msg="loading 3 rows"),
                LogLine(t=now, level="WARNING", step="save", msg="overwriting out/result.json"),
            ],
        )
    )
    store.upsert(runs)
    return {"content": content, "now": now}


def test_list_filters_and_pages_newest_first(
    client: httpx.Client, seeded: dict[str, object]
) -> None:
    now = seeded["now"]
    assert isinstance(now, datetime)
    first = client.get("/api/v1/runs", params={"limit": 30})
    assert first.status_code == 200, first.text
    page = first.json()
    assert [r["job_id"] for r in page["runs"]] == [f"job{i:04d}" for i in range(30)]
    seen = [r["job_id"] for r in page["runs"]]
    cursor = page["next_cursor"]
    while cursor:
        page = client.get("/api/v1/runs", params={"limit": 30, "cursor": cursor}).json()
        seen += [r["job_id"] for r in page["runs"]]
        cursor = page["next_cursor"]
    assert len(seen) == len(set(seen)) == 121

    def ids(**params: object) -> list[str]:
        answer = client.get("/api/v1/runs", params={"limit": 1000, **params})
        assert answer.status_code == 200, answer.text
        return [r["job_id"] for r in answer.json()["runs"]]

    assert len(ids(pipeline="etl")) == 100
    assert ids(status="failed") == [f"job{i:04d}" for i in range(0, 100, 10)]
    assert len(ids(queue="gpu")) == 20 and len(ids(queue="gpu", status="cancelled")) == 5
    assert ids(q="FIRE") == ids(status="failed")  # the error text, any case
    assert len(ids(q="repo")) == 20  # the pipeline name
    assert len(ids(since="30m30s")) == 31  # minutes 0..30 (an age)
    since = (now - timedelta(minutes=9, seconds=30)).isoformat()
    assert ids(since=since) == [f"job{i:04d}" for i in range(10)]
    until = (now - timedelta(minutes=499)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert ids(until=until) == ["job0999"]


def test_one_run_its_steps_logs_and_artifacts(
    client: httpx.Client, seeded: dict[str, object], data_dir: Path
) -> None:
    answer = client.get("/api/v1/runs/job0999")
    assert answer.status_code == 200, answer.text
    detail = answer.json()
    assert detail["pipeline"] == "with-files" and detail["status"] == "succeeded"
    assert [s["name"] for s in detail["steps"]] == ["load", "save"]
    assert detail["steps"][1]["plugin"] == "Output.json"
    logs = client.get("/api/v1/runs/job0999/logs").json()
    assert [line["msg"] for line in logs["lines"]] == [
        "loading 3 rows",
        "overwriting out/result.json",
    ]
    assert logs["truncated"] is False and logs["running"] is False
    followed = client.get("/api/v1/runs/job0999/logs", params={"follow": "true"})
    assert followed.headers["content-type"].startswith("text/event-stream")
    assert followed.text.count("event: line") == 2 and "event: end" in followed.text

    listed = client.get("/api/v1/runs/job0999/artifacts").json()
    assert [a["name"] for a in listed["artifacts"]] == ["out/gone.csv", "out/result.json"]
    download = client.get("/api/v1/runs/job0999/artifacts/out/result.json")
    assert download.status_code == 200, download.text
    assert download.headers["content-type"].startswith("application/json")
    assert download.content == seeded["content"]
    assert hashlib.sha256(download.content).hexdigest() == listed["artifacts"][1]["sha256"]

    gone = client.get("/api/v1/runs/job0999/artifacts/out/gone.csv")
    assert gone.status_code == 404 and "no longer" in gone.json()["error"]
    for missing in ("/api/v1/runs/nope", "/api/v1/runs/nope/logs", "/api/v1/runs/nope/artifacts"):
        answer = client.get(missing)
        assert answer.status_code == 404, missing
        assert "nope" in answer.json()["error"]
    assert client.get("/api/v1/runs/job0999/artifacts/out/other.json").status_code == 404


def test_artifact_paths_never_leave_the_data_dir(
    client: httpx.Client, store: RunStore, data_dir: Path, tmp_path: Path
) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret")
    (data_dir / "link.txt").symlink_to(secret)
    store.upsert(
        [
            run(
                1,
                artifacts=[
                    ArtifactRecord(name="../secret.txt", size=10),
                    ArtifactRecord(name="link.txt", size=10),
                    ArtifactRecord(name=str(secret), size=10),
                ],
            )
        ]
    )
    for name in ("../secret.txt", "link.txt", str(secret).lstrip("/"), "%2e%2e/secret.txt"):
        answer = client.get(f"/api/v1/runs/job0001/artifacts/{name}")
        assert answer.status_code == 404, (name, answer.text)
        assert "top secret" not in answer.text


def test_bad_input_is_422_naming_the_field(client: httpx.Client, seeded: object) -> None:
    cases = {
        "/api/v1/runs?cursor=not-a-cursor": "query.cursor",
        "/api/v1/runs?since=yesterday": "query.since",
        "/api/v1/runs?until=2026-13-45": "query.until",
        "/api/v1/runs?limit=0": "query.limit",
        "/api/v1/runs?limit=1001": "query.limit",
        "/api/v1/runs?status=sleeping": "query.status",
        "/api/v1/runs/export?format=xml": "query.format",
        "/api/v1/runs/stats?group_by=weekday": "query.group_by",
        "/api/v1/runs/stats?since=soon": "query.since",
    }
    for url, field in cases.items():
        answer = client.get(url)
        assert answer.status_code == 422, (url, answer.text)
        body = answer.json()
        assert field in body["error"], (url, body)
        assert body["detail"][0]["field"] == field, (url, body)


def test_export_csv_and_jsonl(client: httpx.Client, seeded: object) -> None:
    answer = client.get("/api/v1/runs/export", params={"format": "csv", "pipeline": "etl"})
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/csv")
    assert "attachment" in answer.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(answer.text)))
    assert len(rows) == 100 and rows[0]["job_id"] == "job0000"
    assert {row["status"] for row in rows} == {"succeeded", "failed"}
    assert rows[0]["error"] == "disk on fire" and rows[1]["error"] == ""

    lines = client.get("/api/v1/runs/export", params={"format": "jsonl"}).text.splitlines()
    assert len(lines) == 121
    records = [json.loads(line) for line in lines]
    assert records[0]["job_id"] == "job0000" and records[-1]["job_id"] == "job0999"
    failed = client.get("/api/v1/runs/export", params={"format": "jsonl", "status": "failed"})
    assert len(failed.text.splitlines()) == 10


def test_stats_by_pipeline_status_and_hour(client: httpx.Client, seeded: object) -> None:
    answer = client.get("/api/v1/runs/stats", params={"since": "7d", "group_by": "pipeline"})
    assert answer.status_code == 200, answer.text
    rows = {row["key"]: row for row in answer.json()["rows"]}
    etl = rows["etl"]
    assert (etl["count"], etl["succeeded"], etl["failed"]) == (100, 90, 10)
    assert etl["failure_rate"] == pytest.approx(0.1)
    assert 140 <= etl["p50_ms"] <= 160 and 190 <= etl["p95_ms"] <= 200
    assert rows["report"]["count"] == 20 and rows["report"]["failed"] == 0
    by_status = client.get("/api/v1/runs/stats", params={"since": "7d", "group_by": "status"})
    counts = {row["key"]: row["count"] for row in by_status.json()["rows"]}
    assert counts == {"succeeded": 106, "failed": 10, "cancelled": 5}
    hours = client.get("/api/v1/runs/stats", params={"since": "7d", "group_by": "hour"}).json()
    assert sum(row["count"] for row in hours["rows"]) == 121
    recent = client.get("/api/v1/runs/stats").json()  # the last 24 h by default
    assert recent["group_by"] == "pipeline" and sum(r["count"] for r in recent["rows"]) == 121
    status = client.get("/api/v1/runs/status").json()
    assert status["runs"] == 121 and status["retention_days"] == 30
    assert status["ingest"]["enabled"] is True


def test_jobs_list_merges_the_run_store(client: httpx.Client, seeded: object) -> None:
    """Redis holds no job here: the job list shows the stored runs, newest first, and a
    job id answers from the store."""
    page = client.get("/api/v1/queue/jobs", params={"limit": 10}).json()
    assert page["total"] == 121
    assert [job["job_id"] for job in page["jobs"]] == [f"job{i:04d}" for i in range(10)]
    failed = client.get("/api/v1/queue/jobs", params={"status": "failed", "limit": 100}).json()
    assert failed["total"] == 10 and all(j["status"] == "failed" for j in failed["jobs"])
    assert client.get("/api/v1/queue/jobs", params={"status": "queued"}).json()["total"] == 0
    second = client.get("/api/v1/queue/jobs", params={"limit": 10, "offset": 10}).json()
    assert second["jobs"][0]["job_id"] == "job0010"
    job = client.get("/api/v1/queue/jobs/job0000")
    assert job.status_code == 200, job.text
    assert job.json()["status"] == "failed" and job.json()["error"] == "disk on fire"
    waited = client.get("/api/v1/queue/jobs/job0000/wait", params={"timeout": "1s"}).json()
    assert waited["timed_out"] is False and waited["status"] == "failed"
    cancel = client.post("/api/v1/queue/jobs/job0001/cancel")
    assert cancel.status_code == 409 and "already ended" in cancel.json()["error"]
    assert client.get("/api/v1/queue/jobs/nope").status_code == 404


def mimir_runs(server: ServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIMIR_")}
    env["MIMIR_API_URL"] = server.base_url
    return subprocess.run(
        [sys.executable, "-m", "mimir.core.cli", "runs", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_list_show_logs_export_stats(
    server: ServerProcess, seeded: object, tmp_path: Path
) -> None:
    listed = mimir_runs(server, "list", "--status", "failed", "--limit", "5")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split()[:3] == ["JOB", "PIPELINE", "STATUS"]
    assert [line.split()[0] for line in lines[1:6]] == [f"job{i:04d}" for i in range(0, 50, 10)]
    assert "disk on fire" in lines[1] and lines[-1].startswith("more: --cursor ")
    as_json = json.loads(mimir_runs(server, "list", "--pipeline", "report", "--json").stdout)
    assert len(as_json["runs"]) == 20

    shown = mimir_runs(server, "show", "job0999")
    assert shown.returncode == 0, shown.stderr
    assert "with-files" in shown.stdout and "Output.json" in shown.stdout
    assert "out/result.json" in shown.stdout
    logs = mimir_runs(server, "logs", "job0999")
    assert "loading 3 rows" in logs.stdout and "[save]" in logs.stdout
    followed = mimir_runs(server, "logs", "-f", "job0999")
    assert followed.returncode == 0 and "overwriting out/result.json" in followed.stdout

    target = tmp_path / "runs.csv"
    exported = mimir_runs(server, "export", "--queue", "gpu", "-o", str(target))
    assert exported.returncode == 0, exported.stderr
    assert len(list(csv.DictReader(target.open()))) == 20
    jsonl = mimir_runs(server, "export", "--format", "jsonl", "-q", "fire")
    assert len(jsonl.stdout.splitlines()) == 10
    stats = mimir_runs(server, "stats", "--since", "7d")
    assert "etl" in stats.stdout and "10.0" in stats.stdout

    missing = mimir_runs(server, "show", "nope")
    assert missing.returncode == 1 and "404" in missing.stderr
    bad = mimir_runs(server, "list", "--since", "whenever")
    assert bad.returncode == 1 and "query.since" in bad.stderr
