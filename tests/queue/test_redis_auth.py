"""A Redis that requires a password, met without one or with a wrong one: one clear
message naming MIMIR_REDIS_PASSWORD_FILE (never the password), ``mimir enqueue`` exits 1
with it, and a worker stops at once instead of retrying for MIMIR_WORKER_MAX_OUTAGE.
Against a real ``redis-server --requirepass``."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.exceptions import (
    AuthenticationError,
    AuthenticationWrongNumberOfArgsError,
    ConnectionError,
    ResponseError,
)

from mimir.core.queue import QueueAuthError, QueueUnavailableError
from mimir.core.queue.cli import main as enqueue_main
from mimir.core.queue.connection import PASSWORD_FILE_ENV
from mimir.core.queue.errors import is_auth_error, redis_auth_message
from tests.helpers import RedisServer, free_port

PASSWORD = "auth-s3cret-91c4"
MISSING = "Redis requires a password: set MIMIR_REDIS_PASSWORD_FILE to the file holding it"
REFUSED = "Redis refused the password"


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    directory = tmp_path_factory.mktemp("auth-redis")
    server = RedisServer(
        port=free_port(), directory=directory, extra_args=("--requirepass", PASSWORD)
    ).start()
    try:
        yield server
    finally:
        server.stop(kill=True)


@pytest.fixture
def wrong_file(tmp_path: Path) -> Path:
    path = tmp_path / "wrong-password"
    path.write_text("not-the-password\n", encoding="utf-8")
    return path


def test_every_form_of_refusal_is_recognised() -> None:
    """redis-py 8.1 raises AuthenticationError for a missing password (RESP2: "Authentication
    required."; RESP3: "HELLO must be called …") and for a wrong one (WRONGPASS); older
    servers' replies and AUTH argument errors are recognised too."""
    missing = [
        AuthenticationError("Authentication required."),
        AuthenticationError("HELLO must be called with the client already authenticated"),
        ResponseError("NOAUTH Authentication required."),
    ]
    wrong = [
        AuthenticationError("invalid username-password pair or user is disabled."),
        ResponseError("WRONGPASS invalid username-password pair"),
        ResponseError("ERR invalid password"),
        AuthenticationWrongNumberOfArgsError("wrong number of arguments for 'auth' command"),
    ]
    for exc in missing:
        assert is_auth_error(exc)
        assert redis_auth_message(exc).startswith(MISSING)
    for exc in wrong:
        assert is_auth_error(exc)
        assert redis_auth_message(exc).startswith(REFUSED)
    for exc in (ConnectionError("Connection refused"), ResponseError("WRONGTYPE"), OSError()):
        assert not is_auth_error(exc)
    message = redis_auth_message(missing[0])
    assert "secrets/redis-password" in message and "embedded-redis/secrets" in message
    assert issubclass(QueueAuthError, QueueUnavailableError)  # 503 on the API, exit 1 here


def _enqueue(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text("name: p\nsteps:\n  - name: echo\n    plugin: Debug.echo\n")
    capsys.readouterr()
    code = enqueue_main([str(pipeline)])
    out, err = capsys.readouterr()
    return code, out + err


def test_enqueue_without_or_with_a_wrong_password(
    secured: RedisServer,
    wrong_file: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("REDIS_URL", secured.url)
    monkeypatch.delenv(PASSWORD_FILE_ENV, raising=False)
    code, said = _enqueue(tmp_path, capsys)
    assert code == 1 and f"mimir enqueue: cannot enqueue: {MISSING}" in said, said
    assert "HELLO" not in said and PASSWORD not in said
    monkeypatch.setenv(PASSWORD_FILE_ENV, str(wrong_file))
    code, said = _enqueue(tmp_path, capsys)
    assert code == 1 and f"cannot enqueue: {REFUSED}" in said, said
    assert PASSWORD not in said and "not-the-password" not in said
    right = tmp_path / "right"
    right.write_text(PASSWORD)
    monkeypatch.setenv(PASSWORD_FILE_ENV, str(right))
    code, said = _enqueue(tmp_path, capsys)
    assert code == 0 and "enqueued 1 job(s)" in said and PASSWORD not in said


def test_worker_stops_at_once_without_or_with_a_wrong_password(
    secured: RedisServer, wrong_file: Path, tmp_path: Path
) -> None:
    env = {**os.environ, "REDIS_URL": secured.url, "MIMIR_WORKER_MAX_OUTAGE": "300"}
    env.pop(PASSWORD_FILE_ENV, None)
    env["MIMIR_STATE_DIR"] = str(tmp_path / "state")
    for password_file, expected in ((None, MISSING), (wrong_file, REFUSED)):
        if password_file is not None:
            env[PASSWORD_FILE_ENV] = str(password_file)
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "mimir.worker", "--concurrency", "1"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        took = time.monotonic() - started
        output = done.stdout + done.stderr
        assert done.returncode == 1, output
        assert f"cannot connect: {expected}" in output, output
        assert "retrying" not in output and "giving up in" not in output
        assert PASSWORD not in output and "not-the-password" not in output
        assert took < 30, f"the worker took {took:.1f}s to give up"


def test_the_servers_readiness_says_the_password_is_missing_or_refused(
    secured: RedisServer, wrong_file: Path, tmp_path: Path
) -> None:
    """``/ready`` (the container's health check) is 503 either way; its error tells a
    Redis that wants a password apart from one that does not answer."""
    import httpx

    from tests.helpers import ServerProcess

    env = {**os.environ, "REDIS_URL": secured.url, "MIMIR_STATE_DIR": str(tmp_path / "state")}
    env.pop(PASSWORD_FILE_ENV, None)
    env.pop("MIMIR_API_TOKEN", None)
    for password_file, expected in ((None, MISSING), (wrong_file, REFUSED)):
        if password_file is not None:
            env[PASSWORD_FILE_ENV] = str(password_file)
        server = ServerProcess(free_port(), env).start()
        try:
            with httpx.Client(base_url=server.base_url, timeout=10) as client:
                assert client.get("/health").json()["redis"] == "unavailable"
                ready = client.get("/ready")
                assert ready.status_code == 503, ready.text
                assert ready.json()["error"].startswith(f"not ready: {expected}"), ready.text
                # The answer needs no token: it names the variable, not this host's paths.
                assert "secrets/redis-password" not in ready.text, ready.text
                assert str(tmp_path) not in ready.text, ready.text
                assert PASSWORD not in ready.text and "not-the-password" not in ready.text
            assert PASSWORD not in server.output(200)
        finally:
            server.stop()
