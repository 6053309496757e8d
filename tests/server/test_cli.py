"""``mimir server`` as a command: --embedded brings its own Redis and workers; bad flags."""

from __future__ import annotations

import asyncio
import re
import signal
import socket
from collections.abc import Callable
from pathlib import Path

import httpx
import psutil
import pytest

from mimir.core.queue.client import JobQueue, connect
from tests.helpers import ServerProcess, port_open, wait_until


def _worker_count(redis_url: str) -> int:
    async def count() -> int:
        redis = connect(redis_url)
        try:
            return len(await JobQueue(redis).workers())
        finally:
            await redis.aclose()

    return asyncio.run(count())


@pytest.mark.slow
@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_embedded_brings_up_redis_and_workers_and_stops_them_all(
    make_server: Callable[..., ServerProcess], tmp_path: Path, stop_signal: signal.Signals
) -> None:
    server = make_server(args=["--embedded", "--workers", "2"]).start(
        timeout=60, wait_for_redis=True
    )
    assert server.process is not None
    output = server.output()
    assert f"Mimir API listening on http://127.0.0.1:{server.port}" in output
    redis_url = re.search(r"Embedded Redis at (redis://127\.0\.0\.1:(\d+)/0)", output)
    assert redis_url, output
    redis_port = int(redis_url.group(2))
    assert (tmp_path / "state" / "embedded-redis" / "redis.log").exists()

    wait_until(lambda: _worker_count(redis_url.group(1)) == 2, timeout=30, message="2 workers")
    children = psutil.Process(server.process.pid).children()
    assert len(children) == 3  # redis-server and two workers

    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        run = client.post(
            "/api/v1/pipelines/execute",
            json={"pipeline_file": "test_pipeline.yaml", "context": {"input": "test data"}},
        )
        assert run.status_code == 200 and run.json()["success"] is True

    assert server.stop(stop_signal, timeout=60) == 0
    assert not port_open(redis_port)
    assert not any(child.is_running() and child.status() != "zombie" for child in children)
    # Redis went down last: the workers had it while they drained.
    assert (tmp_path / "state" / "embedded-redis" / "appendonlydir").is_dir()


def test_workers_flag_needs_embedded(make_server: Callable[..., ServerProcess]) -> None:
    server = make_server(args=["--workers", "2"]).launch()
    assert server.wait() == 2
    assert "--workers needs --embedded" in server.output()


def test_a_taken_port_fails_with_a_message(make_server: Callable[..., ServerProcess]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        server = make_server(redis_url="127.0.0.1:1")
        server.port = sock.getsockname()[1]
        server.launch()
        assert server.wait() != 0
    assert "address already in use" in server.output().lower()


def test_unknown_log_level_is_refused(make_server: Callable[..., ServerProcess]) -> None:
    server = make_server(MIMIR_LOG_LEVEL="LOUD").launch()
    assert server.wait() == 2
    assert "unknown log level 'LOUD'" in server.output()
