"""``GET /health`` and a server whose Redis is down (synchronous execution still works)."""

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


def test_server_runs_pipelines_while_redis_is_down_and_notices_it_coming_back(
    make_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    redis_port = free_port()
    server = make_server(redis_url=f"127.0.0.1:{redis_port}").start()
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        assert client.get("/health").json()["redis"] == "unavailable"
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
        finally:
            redis.stop(kill=True)
