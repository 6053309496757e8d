"""Secrets read from files (MIMIR_API_TOKEN_FILE) and the worker's health file
(MIMIR_WORKER_HEALTH_FILE), with real server and worker processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from mimir.core.settings import Settings
from tests.helpers import RedisServer, ServerProcess, WorkerProcess, free_port, wait_until


def test_token_file_is_read_and_stripped(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("  s3cret-token\n")
    settings = Settings.from_env({"MIMIR_API_TOKEN_FILE": str(path)})
    assert settings.api_token == "s3cret-token"
    assert "s3cret" not in repr(settings)


def test_token_variable_wins_over_the_file(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("from-file")
    env = {"MIMIR_API_TOKEN": "from-env", "MIMIR_API_TOKEN_FILE": str(path)}
    assert Settings.from_env(env).api_token == "from-env"
    # ... even when the file cannot be read: it is not looked at.
    env["MIMIR_API_TOKEN_FILE"] = str(tmp_path / "absent")
    assert Settings.from_env(env).api_token == "from-env"


def test_missing_or_empty_token_file_is_an_error(tmp_path: Path) -> None:
    absent = tmp_path / "absent"
    with pytest.raises(ValueError, match=f"MIMIR_API_TOKEN_FILE={absent}: cannot read it"):
        Settings.from_env({"MIMIR_API_TOKEN_FILE": str(absent)})
    empty = tmp_path / "empty"
    empty.write_text(" \n")
    with pytest.raises(ValueError, match="is empty"):
        Settings.from_env({"MIMIR_API_TOKEN_FILE": str(empty)})
    assert Settings.from_env({"MIMIR_API_TOKEN_FILE": " "}).api_token is None


def test_one_reader_for_every_secret_file(tmp_path: Path) -> None:
    """MIMIR_API_TOKEN_FILE and MIMIR_REDIS_PASSWORD_FILE go through read_secret_file:
    the same stripping and the same messages, naming the variable and the path only."""
    from mimir.core.queue.connection import RedisPasswordFileError, redis_password_from_file
    from mimir.core.secretfiles import SecretFileError, read_secret_file

    path = tmp_path / "secret"
    path.write_text("\t hidden-value \r\n")
    assert read_secret_file("X_FILE", str(path)) == "hidden-value"
    assert redis_password_from_file({"MIMIR_REDIS_PASSWORD_FILE": str(path)}) == "hidden-value"
    path.write_text("\n")
    for variable in ("MIMIR_API_TOKEN_FILE", "MIMIR_REDIS_PASSWORD_FILE"):
        with pytest.raises(SecretFileError, match=f"^{variable}={path} is empty$"):
            if variable == "MIMIR_API_TOKEN_FILE":
                Settings.from_env({variable: str(path)})
            else:
                redis_password_from_file({variable: str(path)})
    assert issubclass(RedisPasswordFileError, SecretFileError)
    assert issubclass(SecretFileError, ValueError)


def test_server_refuses_to_start_on_an_unreadable_token_file(tmp_path: Path) -> None:
    env = {**os.environ, "MIMIR_API_TOKEN_FILE": str(tmp_path / "absent")}
    env.pop("MIMIR_API_TOKEN", None)
    done = subprocess.run(
        [sys.executable, "-m", "mimir.server", "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "MIMIR_API_TOKEN_FILE" in done.stderr and "cannot read it" in done.stderr


@pytest.mark.slow
def test_server_takes_its_token_from_the_file(
    tmp_path: Path, redis_server: RedisServer, data_dir: Path
) -> None:
    path = tmp_path / "token"
    path.write_text("file-token-123\n")
    path.chmod(0o400)
    env = {**os.environ, "REDIS_URL": redis_server.url, "MIMIR_API_TOKEN_FILE": str(path)}
    env.pop("MIMIR_API_TOKEN", None)
    server = ServerProcess(free_port(), env, log_path=tmp_path / "server.log").start()
    try:
        url = f"{server.base_url}/api/v1/queue/status"
        assert httpx.get(url, timeout=10).status_code == 401
        answer = httpx.get(url, headers={"Authorization": "Bearer file-token-123"}, timeout=10)
        assert answer.status_code == 200, answer.text
    finally:
        server.stop()


@pytest.mark.slow
def test_worker_touches_its_health_file_after_each_heartbeat(
    tmp_path: Path, redis_server: RedisServer, data_dir: Path
) -> None:
    health = tmp_path / "heartbeat"
    worker = WorkerProcess(
        {
            "REDIS_URL": redis_server.url,
            "MIMIR_DATA_DIR": str(data_dir),
            "MIMIR_WORKER_HEALTH_FILE": str(health),
            "MIMIR_WORKER_HEARTBEAT": "0.2",
        },
        log_path=tmp_path / "worker.log",
    ).start()
    try:
        wait_until(health.exists, timeout=10, message="the health file")
        first = health.stat().st_mtime_ns
        wait_until(lambda: health.stat().st_mtime_ns > first, timeout=10, message="a new beat")
        # Redis gone: no heartbeat succeeds, so the file ages past a few beats.
        redis_server.stop(kill=True)
        wait_until(
            lambda: time.time() - health.stat().st_mtime > 1.0, timeout=15, message="it ages"
        )
        assert worker.alive()
    finally:
        worker.kill()
