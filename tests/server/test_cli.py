"""``mimir server`` as a command: --embedded brings its own Redis and workers; bad flags."""

from __future__ import annotations

import asyncio
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import psutil
import pytest
from redis import Redis
from redis import exceptions as redis_errors

from mimir.core.queue.client import JobQueue, connect
from mimir.server.cli import is_loopback
from mimir.server.redaction import redact_url
from tests.helpers import RedisServer, ServerProcess, port_open, wait_until


def _worker_count(redis_url: str, password: str | None = None) -> int:
    async def count() -> int:
        redis = connect(redis_url, password=password)
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

    # The embedded Redis requires its password (0600, in a 0700 directory), in no command line.
    secrets = tmp_path / "state" / "embedded-redis" / "secrets"
    assert secrets.stat().st_mode & 0o777 == 0o700
    for name in ("redis-password", "redis.conf"):
        assert (secrets / name).stat().st_mode & 0o777 == 0o600
    password = (secrets / "redis-password").read_text().strip()
    with pytest.raises(redis_errors.AuthenticationError):  # NOAUTH
        Redis(port=redis_port, socket_timeout=5).ping()
    with Redis(port=redis_port, password=password, socket_timeout=5) as authed:
        assert authed.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
        assert authed.config_get("maxmemory") == {"maxmemory": str(1024**3)}

    wait_until(
        lambda: _worker_count(redis_url.group(1), password) == 2, timeout=30, message="2 workers"
    )
    children = psutil.Process(server.process.pid).children()
    assert len(children) == 3  # redis-server and two workers
    for process in [psutil.Process(server.process.pid), *children]:
        command = " ".join(process.cmdline())
        assert password not in command
        if "mimir.worker" in command:  # they read the file
            wanted = str(secrets / "redis-password")
            assert process.environ()["MIMIR_REDIS_PASSWORD_FILE"] == wanted

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


def test_the_mimir_command_listens_on_mimir_port(
    make_server: Callable[..., ServerProcess], redis_server: RedisServer
) -> None:
    server = make_server(redis_url=redis_server.url)
    server.env["MIMIR_PORT"] = str(server.port)
    mimir = Path(sys.executable).with_name("mimir")  # the console script: `mimir server`
    with server.log_path.open("ab") as log:
        server.process = subprocess.Popen(
            [str(mimir), "server"], env=server.env, stdout=log, stderr=log
        )
    wait_until(
        lambda: f"listening on http://127.0.0.1:{server.port}" in server.output(),
        timeout=30,
        message="`mimir server` on $MIMIR_PORT",
    )
    assert httpx.get(f"{server.base_url}/health", timeout=5).json()["redis"] == "ok"


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("localhost", True),
        ("::1", True),
        ("[::1]", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.10", False),
        ("example.org", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_redis_passwords_are_redacted() -> None:
    assert redact_url("redis://:hunter2@redis:6379/0") == "redis://:***@redis:6379/0"
    assert redact_url("redis://user:hunter2@host/1") == "redis://user:***@host/1"
    assert redact_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


@pytest.mark.slow
def test_embedded_restarts_a_worker_that_dies(
    make_server: Callable[..., ServerProcess],
) -> None:
    server = make_server(args=["--embedded", "--workers", "1"]).start(
        timeout=60, wait_for_redis=True
    )
    assert server.process is not None
    parent = psutil.Process(server.process.pid)

    def workers() -> list[psutil.Process]:
        alive = []
        for child in parent.children():
            try:
                if "mimir.worker" in " ".join(child.cmdline()):
                    alive.append(child)
            except psutil.Error:  # exited (or a zombie) between listing and looking
                continue
        return alive

    [first] = wait_until(workers, timeout=30, message="the embedded worker")
    first.kill()
    [second] = wait_until(
        lambda: [w for w in workers() if w.pid != first.pid],
        timeout=30,
        message="a replacement worker",
    )
    restarted = f"worker pid {first.pid} exited with code -9; restarted as pid {second.pid}"
    wait_until(lambda: restarted in server.output(lines=200), message="the restart's log line")
    assert server.stop(timeout=60) == 0
    assert not second.is_running() or second.status() == "zombie"
