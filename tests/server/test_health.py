"""``GET /health``, ``GET /ready``, and a server whose Redis is down (synchronous execution
still works; ``/ready`` answers 503 until Redis answers)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx

from tests.helpers import RedisServer, ServerProcess, free_port, wait_until


def test_health_reports_redis_ok(api_client: httpx.Client) -> None:
    answer = api_client.get("/health")
    assert answer.status_code == 200
    assert answer.json() == {"status": "ok", "version": "0.1.0", "redis": "ok"}
    assert answer.headers["x-request-id"]
    ready = api_client.get("/ready")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "version": "0.1.0", "redis": "ok"}


def test_server_runs_pipelines_while_redis_is_down_and_notices_it_coming_back(
    make_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    redis_port = free_port()
    server = make_server(redis_url=f"127.0.0.1:{redis_port}").start()
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        health = client.get("/health")
        assert (health.status_code, health.json()["redis"]) == (200, "unavailable")
        ready = client.get("/ready")  # what the container health check asks: unhealthy
        assert (ready.status_code, ready.json()["error"]) == (
            503,
            "not ready: the queue's Redis does not answer",
        )
        run = client.post(
            "/api/v1/pipelines/execute",
            json={"pipeline_file": "test_pipeline.yaml", "context": {"input": "test data"}},
        )
        assert run.status_code == 200 and run.json()["success"] is True

        redis = RedisServer(port=redis_port, directory=tmp_path / "late-redis").start()
        try:
            wait_until(
                lambda: client.get("/health").json()["redis"] == "ok",
                timeout=15,
                message="health to see the late Redis",
            )
            assert client.get("/ready").status_code == 200
        finally:
            redis.stop(kill=True)
