"""The queue API of a real server process with real workers, over HTTP."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers import RedisServer, ServerProcess, WorkerProcess, wait_until

SEED_BODY = '{"pipeline_file": "test_pipeline.yaml", "context": {"input": "test data"}}'

SLOW = {
    "name": "slow",
    "steps": [{"name": "nap", "plugin": "Debug.sleep", "config": {"seconds": 30}}],
}
FAILING = {"name": "failing", "steps": [{"name": "boom", "plugin": "Debug.fail",
                                          "config": {"message": "disk on fire"}}]}  # fmt: skip


@pytest.fixture
def worker(redis_server: RedisServer, data_dir: Path, tmp_path: Path) -> Iterator[WorkerProcess]:
    """A real worker on the server's Redis and data directory."""
    process = WorkerProcess(
        {"REDIS_URL": redis_server.url, "MIMIR_DATA_DIR": str(data_dir)},
        log_path=tmp_path / "worker.log",
    ).start()
    yield process
    process.kill()


def test_the_seeds_enqueue_status_wait_flow_verbatim(
    api_client: httpx.Client, worker: WorkerProcess
) -> None:
    enqueued = api_client.post(
        "/api/v1/queue/pipelines/enqueue",
        content=SEED_BODY,
        headers={"Content-Type": "application/json"},
    )
    assert enqueued.status_code == 202, enqueued.text
    body = enqueued.json()
    assert body["message"] == "Pipeline job enqueued successfully"
    assert body["status"] == "queued" and body["job_id"]
    job_id = body["job_id"]

    status = api_client.get("/api/v1/queue/status")
    assert status.status_code == 200
    assert {"queue_length", "by_priority", "scheduled", "running", "dead", "workers",
            "completed_per_sec", "failed_per_sec", "totals"} <= set(status.json())  # fmt: skip

    record = api_client.get(f"/api/v1/queue/jobs/{job_id}").json()
    assert record["job_id"] == job_id and record["pipeline"] == "test-pipeline"

    waited = api_client.get(f"/api/v1/queue/jobs/{job_id}/wait", params={"timeout": "60s"})
    assert waited.status_code == 200, waited.text
    done = waited.json()
    assert done["timed_out"] is False and done["status"] == "succeeded"
    assert done["worker_id"] == worker.worker_id and done["attempts"] == 1
    assert done["result"]["context"]["echoed"] == "test data"
    assert done["started_at"].endswith("Z") and done["finished_at"].endswith("Z")
    assert api_client.get("/api/v1/queue/status").json()["totals"]["succeeded"] == 1


def test_unknown_job_is_404_and_bad_duration_is_422(api_client: httpx.Client) -> None:
    for method, path in (
        ("GET", "/api/v1/queue/jobs/nope"),
        ("GET", "/api/v1/queue/jobs/nope/wait?timeout=10ms"),
        ("POST", "/api/v1/queue/jobs/nope/cancel"),
        ("POST", "/api/v1/queue/dead-letter/nope/retry"),
    ):
        answer = api_client.request(method, path)
        assert answer.status_code == 404, (path, answer.text)
        assert "nope" in answer.json()["error"]
    bad = api_client.get("/api/v1/queue/jobs/nope/wait", params={"timeout": "soon"})
    assert bad.status_code == 422 and "invalid duration" in bad.json()["error"]
    bad_body = api_client.post(
        "/api/v1/queue/pipelines/enqueue",
        json={"pipeline_file": "test_pipeline.yaml", "timeout": "forever", "priority": "urgent"},
    )
    assert bad_body.status_code == 422
    assert "timeout" in bad_body.json()["error"] and "priority" in bad_body.json()["error"]
    missing = api_client.post(
        "/api/v1/queue/pipelines/enqueue", json={"pipeline_file": "no_such.yaml"}
    )
    assert missing.status_code == 404


def test_wait_times_out_with_200_then_cancel_and_list(api_client: httpx.Client) -> None:
    job_id = api_client.post(
        "/api/v1/queue/pipelines/enqueue", json={"pipeline": SLOW, "priority": "high"}
    ).json()["job_id"]
    waited = api_client.get(f"/api/v1/queue/jobs/{job_id}/wait", params={"timeout": "200ms"})
    assert waited.status_code == 200
    assert waited.json()["timed_out"] is True and waited.json()["status"] == "queued"
    status = api_client.get("/api/v1/queue/status").json()
    assert status["queue_length"] == 1 and status["by_priority"]["high"] == 1
    queued = api_client.get("/api/v1/queue/jobs", params={"status": "queued"}).json()
    assert [j["job_id"] for j in queued["jobs"]] == [job_id] and queued["total"] == 1

    cancelled = api_client.post(f"/api/v1/queue/jobs/{job_id}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    again = api_client.post(f"/api/v1/queue/jobs/{job_id}/cancel")
    assert again.status_code == 409 and "already ended" in again.json()["error"]
    assert api_client.get("/api/v1/queue/status").json()["queue_length"] == 0


def test_dead_letter_retry_workers_metrics(api_client: httpx.Client, worker: WorkerProcess) -> None:
    job_id = api_client.post(
        "/api/v1/queue/pipelines/enqueue", json={"pipeline": FAILING, "max_retries": 0}
    ).json()["job_id"]
    done = api_client.get(f"/api/v1/queue/jobs/{job_id}/wait?timeout=30s").json()
    assert done["status"] == "failed" and "disk on fire" in done["error"]
    dead = api_client.get("/api/v1/queue/dead-letter").json()
    assert dead["total"] == 1 and dead["entries"][0]["job_id"] == job_id
    retried = api_client.post(f"/api/v1/queue/dead-letter/{job_id}/retry")
    assert retried.status_code == 200 and retried.json()["attempts"] == 0
    assert api_client.get(f"/api/v1/queue/jobs/{job_id}/wait?timeout=30s").json()["attempts"] == 1

    workers = api_client.get("/api/v1/workers").json()["workers"]
    assert [w["worker_id"] for w in workers] == [worker.worker_id]
    assert workers[0]["pid"] == worker.pid and workers[0]["heartbeat_age_s"] < 5

    metrics = api_client.get("/metrics")
    assert metrics.status_code == 200
    text = metrics.text
    assert 'mimir_workers_alive{pool="default"} 1.0' in text
    assert 'mimir_queue_depth{priority="high",queue="default"} 0.0' in text
    assert 'mimir_jobs_total{status="failed"} 2.0' in text
    assert "mimir_job_duration_seconds_count 2.0" in text

    # Deleting from the dead letter removes the entry and the Redis record, once; the
    # job API then answers from the run store (its run, stored moments after it ended,
    # stays in the history).
    wait_until(
        lambda: api_client.get(f"/api/v1/runs/{job_id}").json().get("attempts") == 1,
        timeout=10,
        message="the run stored",
    )
    assert api_client.delete(f"/api/v1/queue/dead-letter/{job_id}").status_code == 204
    assert api_client.get("/api/v1/queue/dead-letter").json()["total"] == 0
    kept = api_client.get(f"/api/v1/queue/jobs/{job_id}")
    assert kept.status_code == 200 and kept.json()["status"] == "failed"
    assert api_client.delete(f"/api/v1/queue/dead-letter/{job_id}").status_code == 404


def test_events_stream_job_changes_and_stats(
    api_server: ServerProcess, api_client: httpx.Client, worker: WorkerProcess
) -> None:
    seen: list[tuple[str, dict]] = []
    connected = threading.Event()

    def listen() -> None:
        with httpx.stream("GET", f"{api_server.base_url}/api/v1/events", timeout=30) as answer:
            kind = ""
            for line in answer.iter_lines():
                if line.startswith("event: "):
                    kind = line.removeprefix("event: ")
                elif line.startswith("data: "):
                    seen.append((kind, json.loads(line.removeprefix("data: "))))
                    connected.set()
                    if any(k == "job" and d["status"] == "succeeded" for k, d in seen):
                        return

    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    assert connected.wait(15)  # the first stats tick arrived: subscribed
    job_id = api_client.post(
        "/api/v1/queue/pipelines/enqueue", content=SEED_BODY,
        headers={"Content-Type": "application/json"},
    ).json()["job_id"]  # fmt: skip
    thread.join(30)
    statuses = [d["status"] for k, d in seen if k == "job" and d["job_id"] == job_id]
    assert statuses[0] == "queued" and statuses[-1] == "succeeded" and "running" in statuses
    assert any(k == "stats" and "queue_length" in d for k, d in seen)
    wait_until(lambda: not thread.is_alive(), timeout=5)
