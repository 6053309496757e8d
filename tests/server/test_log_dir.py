"""``MIMIR_LOG_DIR``: the server also writes its log to ``server-<hostname>.log`` there."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.helpers import RedisServer, ServerProcess, wait_until


def test_the_server_writes_its_log_in_the_log_dir(
    make_server: Callable[..., ServerProcess], redis_server: RedisServer, tmp_path: Path
) -> None:
    log_dir = tmp_path / "logs"  # created by the server
    server = make_server(redis_url=redis_server.url, MIMIR_LOG_DIR=str(log_dir)).start()
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        assert client.get("/api/v1/plugins").status_code == 200
    log = log_dir / f"server-{socket.gethostname()}.log"
    text = wait_until(
        lambda: log.exists() and "GET /api/v1/plugins 200" in log.read_text() and log.read_text(),
        timeout=10,
        message="the request's access line in the log file",
    )
    assert "Started server process" in text
