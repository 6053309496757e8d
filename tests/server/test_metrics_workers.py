"""The workers' metrics reach ``GET /metrics`` through Redis (real redis-server, server
and worker processes), exactly as many as ran; and the label cap of the flush script."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from mimir.core.queue.keys import QueueKeys
from mimir.core.queue.metrics import FLUSH_SCRIPT, WorkerMetrics, flush_args
from tests.helpers import RedisServer, WorkerProcess, wait_until

TWO_STEPS = {
    "name": "two-steps",
    "steps": [
        {"name": "first", "plugin": "Debug.echo", "config": {"value": 1}},
        {"name": "nap", "plugin": "Debug.sleep", "config": {"seconds": 0.02}},
    ],
}
FAILING = {
    "name": "failing",
    "steps": [{"name": "boom", "plugin": "Debug.fail", "config": {"message": "no"}}],
}


@pytest.fixture
def worker(redis_server: RedisServer, data_dir: Path, tmp_path: Path) -> Iterator[WorkerProcess]:
    process = WorkerProcess(
        {"REDIS_URL": redis_server.url, "MIMIR_DATA_DIR": str(data_dir)},
        concurrency=3,
        log_path=tmp_path / "worker.log",
    ).start()
    yield process
    process.kill()


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(client: httpx.Client) -> tuple[set[str], Samples]:
    """The metric families' names and every sample (name, sorted labels) -> value."""
    answer = client.get("/metrics")
    assert answer.status_code == 200, answer.text
    names: set[str] = set()
    samples: Samples = {}
    for family in text_string_to_metric_families(answer.text):
        names.add(family.name)
        for sample in family.samples:
            names.add(sample.name)
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return names, samples


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def test_worker_metrics_count_what_ran(api_client: httpx.Client, worker: WorkerProcess) -> None:
    ok = api_client.post("/api/v1/queue/pipelines/enqueue", json={"pipeline": TWO_STEPS})
    bad = api_client.post(
        "/api/v1/queue/pipelines/enqueue",
        json={"pipeline": FAILING, "max_retries": 1, "retry_backoff": 0},
    )
    for answer in (ok, bad):
        assert answer.status_code == 202, answer.text
        done = api_client.get(f"/api/v1/queue/jobs/{answer.json()['job_id']}/wait?timeout=30s")
        assert done.json()["status"] in ("succeeded", "failed"), done.text
    assert done.json()["status"] == "failed" and done.json()["attempts"] == 2

    jobs = "mimir_worker_jobs_total"
    where = {"pool": "default", "queue": "default"}
    # Counts arrive with the worker's next heartbeat (0.2 s here).
    names, samples = wait_until(
        lambda: (
            (got := scrape(api_client))
            and sum(v for (n, _), v in got[1].items() if n == jobs) == 3
            and got
        ),
        timeout=10,
        message="the worker's counts in /metrics",
    )
    assert {labels: v for (n, labels), v in samples.items() if n == jobs} == {
        tuple(sorted({**where, "outcome": outcome}.items())): 1.0
        for outcome in ("succeeded", "retried", "failed")
    }
    job_count = "mimir_worker_job_duration_seconds_count"
    assert value(samples, job_count, **where, pipeline="two-steps") == 1
    assert value(samples, job_count, **where, pipeline="failing") == 2
    assert value(samples, "mimir_worker_job_duration_seconds_bucket", **where,
                 pipeline="failing", le="+Inf") == 2  # fmt: skip
    assert (value(samples, "mimir_worker_job_duration_seconds_sum", **where,
                  pipeline="two-steps") or 0) >= 0.02  # fmt: skip
    step_count = "mimir_worker_step_duration_seconds_count"
    steps = {labels: v for (n, labels), v in samples.items() if n == step_count}
    assert steps == {
        (("plugin", "Debug.echo"), ("pool", "default"), ("status", "succeeded")): 1,
        (("plugin", "Debug.sleep"), ("pool", "default"), ("status", "succeeded")): 1,
        (("plugin", "Debug.fail"), ("pool", "default"), ("status", "failed")): 2,
    }
    nap = value(samples, "mimir_worker_step_duration_seconds_bucket", plugin="Debug.sleep",
                pool="default", status="succeeded", le="0.01")  # fmt: skip
    assert nap == 0  # it slept 0.02 s: in the 0.05 bucket, not below
    # The queue's own figures, now by queue, and the heartbeats' gauges by pool.
    assert value(samples, "mimir_jobs_total", status="failed") == 1
    for priority in ("high", "normal", "low"):
        assert value(samples, "mimir_queue_depth", queue="default", priority=priority) == 0
    assert value(samples, "mimir_queue_oldest_job_age_seconds", queue="default") == 0
    assert value(samples, "mimir_workers_alive", pool="default") == 1
    assert value(samples, "mimir_worker_slots", pool="default") == 3
    assert value(samples, "mimir_worker_slots_busy", pool="default") == 0
    assert value(samples, "mimir_workers_busy", pool="default") == 0
    memory = value(samples, "mimir_worker_memory_bytes", pool="default", worker=worker.worker_id)
    assert memory is not None and memory > 10_000_000
    # This server has no cluster backend: no decisions; it wants what runs.
    assert value(samples, "mimir_pool_desired_workers", pool="default") == 1
    assert value(samples, "mimir_autoscaler_decisions_total", pool="default", action="up") == 0

    # Every metric the dashboard queries is one this scrape exports.
    from scripts.grafana_dashboard import dashboard_metric_names

    missing = dashboard_metric_names() - names
    assert not missing, f"the dashboard queries metrics /metrics does not export: {missing}"

    # The counts live in Redis: the worker gone, they stay; the pool has no worker alive.
    assert worker.stop() == 0
    _, after = wait_until(
        lambda: (
            (got := scrape(api_client))
            and value(got[1], "mimir_workers_alive", pool="default") == 0
            and got
        ),
        timeout=10,
        message="the worker gone from /metrics",
    )
    assert {k: v for k, v in after.items() if k[0] == jobs} == {
        k: v for k, v in samples.items() if k[0] == jobs
    }


def test_flush_caps_the_pipeline_label(redis_server: RedisServer) -> None:
    async def run() -> dict[str, str]:
        redis = Redis.from_url(redis_server.url, decode_responses=True)
        keys = QueueKeys("capped:")
        try:
            for batch in (["a", "b", "c"], ["c", "a", "d"]):
                metrics = WorkerMetrics("p")
                for name in batch:
                    metrics.attempt("q", "succeeded", name, 0.2)
                args = flush_args(keys, metrics, metrics.take())  # type: ignore[arg-type]
                args[6] = 2  # the cap
                await redis.eval(FLUSH_SCRIPT, *args)  # type: ignore[misc]
            assert await redis.smembers(keys.metrics_pipelines) == {"a", "b"}
            return dict(await redis.hgetall(keys.metrics_job_time))
        finally:
            await redis.aclose()

    stored = asyncio.run(run())
    counts = {json.loads(k)[2]: int(v) for k, v in stored.items() if json.loads(k)[3] == "count"}
    assert counts == {"a": 2, "b": 1, "other": 3}
    jobs = {json.loads(k)[2]: v for k, v in stored.items() if json.loads(k)[3] == "le_0.25"}
    assert jobs == {"a": "2", "b": "1", "other": "3"}
