"""MIMIR_REDIS_PASSWORD_FILE: the Redis password read from a file (a Docker/Kubernetes
secret) by :func:`connect` for every URL form that carries none, checked against a real
redis-server started with ``--requirepass``; the password never shows in a URL, a repr
or a log line."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.exceptions import AuthenticationError, ResponseError

from mimir.core.backup.manifest import BackupError
from mimir.core.backup.redis_rdb import fetch_rdb
from mimir.core.backup.redis_rdb import redact_url as backup_redact
from mimir.core.queue import connect
from mimir.core.queue.connection import (
    PASSWORD_FILE_ENV,
    RedisPasswordFileError,
    redis_password,
    redis_password_from_file,
)
from mimir.core.settings import Settings
from mimir.server.redaction import redact_url
from tests.helpers import RedisServer, free_port

PASSWORD = "file-s3cret-7f2a"


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[RedisServer]:
    """A real redis-server that requires PASSWORD, on TCP and on a unix socket."""
    server = RedisServer(
        port=free_port(),
        directory=tmp_path / "redis",
        extra_args=(
            "--requirepass",
            PASSWORD,
            "--unixsocket",
            str(tmp_path / "redis.sock"),
            "--unixsocketperm",
            "700",
        ),
    ).start()
    try:
        yield server
    finally:
        server.stop(kill=True)


@pytest.fixture
def password_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "secrets" / "mimir_redis_password"
    path.parent.mkdir()
    path.write_text(PASSWORD + "\n", encoding="utf-8")  # as `echo pw > file` writes it
    path.chmod(0o400)
    monkeypatch.setenv(PASSWORD_FILE_ENV, str(path))
    return path


def test_password_from_file(tmp_path: Path) -> None:
    assert redis_password_from_file({}) is None
    assert redis_password_from_file({PASSWORD_FILE_ENV: "  "}) is None
    path = tmp_path / "pw"
    path.write_text(f"  {PASSWORD} \r\n\n", encoding="utf-8")
    assert redis_password_from_file({PASSWORD_FILE_ENV: str(path)}) == PASSWORD
    # The URL's own password wins over the file's.
    env = {PASSWORD_FILE_ENV: str(path)}
    assert redis_password("redis://:inurl@h:6379/0", env) == "inurl"
    assert redis_password("redis+sentinel://:inurl@h:1/svc", env) == "inurl"
    assert redis_password("redis://h:6379/0", env) == PASSWORD
    assert redis_password("h:6379", env) == PASSWORD
    assert redis_password("redis://h:6379/0", {}) is None


def test_unreadable_or_empty_file_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "pw"
    with pytest.raises(RedisPasswordFileError) as caught:
        redis_password_from_file({PASSWORD_FILE_ENV: str(missing)})
    message = str(caught.value)
    assert message.startswith(f"{PASSWORD_FILE_ENV}={missing}: cannot read")
    assert "No such file" in message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    empty = tmp_path / "empty"
    empty.write_text("\n", encoding="utf-8")
    with pytest.raises(RedisPasswordFileError, match=f"{PASSWORD_FILE_ENV}=.*empty"):
        redis_password_from_file({PASSWORD_FILE_ENV: str(empty)})
    # A ValueError: the server's and the worker's startup print it and exit.
    assert issubclass(RedisPasswordFileError, ValueError)


def test_connect_reads_the_file_for_every_url_form(
    secured: RedisServer,
    password_file: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    socket_path = tmp_path / "redis.sock"
    urls = [
        secured.url,
        f"127.0.0.1:{secured.port}",
        f"unix://{socket_path}",
        f"unix://{socket_path}?db=0",
    ]

    async def ping_all() -> list[object]:
        answers = []
        for url in urls:
            client = connect(url)
            try:
                answers.append(await client.ping())
                assert PASSWORD not in repr(client)
            finally:
                await client.aclose()
        # A blocking pool (the server's) takes the same path.
        client = connect(secured.url, max_connections=2, pool_timeout=1.0)
        try:
            answers.append(await client.ping())
        finally:
            await client.aclose()
        return answers

    assert asyncio.run(ping_all()) == [True] * (len(urls) + 1)
    for url in urls:
        assert PASSWORD not in redact_url(url) and PASSWORD not in backup_redact(url)
    assert PASSWORD not in caplog.text


def test_url_password_wins_and_no_password_is_refused(
    secured: RedisServer, password_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def ping(url: str) -> object:
        client = connect(url)
        try:
            return await client.ping()
        finally:
            await client.aclose()

    # A wrong password in the URL is used (and refused), not replaced by the file's.
    with pytest.raises((AuthenticationError, ResponseError)):
        asyncio.run(ping(f"redis://:wrong@127.0.0.1:{secured.port}/0"))
    assert asyncio.run(ping(f"redis://:{PASSWORD}@127.0.0.1:{secured.port}/0")) is True
    monkeypatch.delenv(PASSWORD_FILE_ENV)
    with pytest.raises((AuthenticationError, ResponseError), match=r"(?i)auth"):
        asyncio.run(ping(secured.url))
    # An unreadable file stops connect() with the message, before any connection.
    monkeypatch.setenv(PASSWORD_FILE_ENV, str(password_file.parent / "absent"))
    with pytest.raises(RedisPasswordFileError, match=PASSWORD_FILE_ENV):
        connect(secured.url)


def test_sentinel_data_nodes_get_the_file_password(password_file: Path) -> None:
    """The Sentinels' primary connection carries the file's password (the failover
    itself runs in tests/worker/test_sentinel_failover.py); the Sentinels' own
    connections don't (the password is the data nodes')."""
    client = connect("redis+sentinel://127.0.0.1:1,127.0.0.1:2/mymaster/0")
    kwargs = client.connection_pool.connection_kwargs
    assert kwargs["password"] == PASSWORD
    manager = client.connection_pool.sentinel_manager  # type: ignore[attr-defined]
    for sentinel in manager.sentinels:
        assert sentinel.connection_pool.connection_kwargs.get("password") is None
    own = connect("redis+sentinel://:inurl@127.0.0.1:1/mymaster/0")
    assert own.connection_pool.connection_kwargs["password"] == "inurl"


def test_backup_fetch_uses_the_file_password(
    secured: RedisServer, password_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    info = fetch_rdb(secured.url, tmp_path / "dump.rdb", timeout=30)
    assert info.size > 0 and (tmp_path / "dump.rdb").read_bytes().startswith(b"REDIS")
    monkeypatch.setenv(PASSWORD_FILE_ENV, str(tmp_path / "absent"))
    with pytest.raises(BackupError, match=PASSWORD_FILE_ENV) as caught:
        fetch_rdb(secured.url, tmp_path / "again.rdb", timeout=30)
    assert PASSWORD not in str(caught.value)


def test_a_stale_file_stops_only_the_commands_that_connect(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Settings never read the file; the server, the worker and enqueue check it at
    startup (exit 2 naming the variable and the path), other commands don't care."""
    from mimir.app.cluster.cli import main as cluster_main
    from mimir.core.queue.cli import main as enqueue_main
    from mimir.server.cli import main as server_main
    from mimir.worker.cli import main as worker_main

    missing = tmp_path / "absent"
    good = tmp_path / "pw"
    good.write_text(PASSWORD, encoding="utf-8")
    assert PASSWORD not in repr(Settings.from_env({PASSWORD_FILE_ENV: str(good)}))
    Settings.from_env({PASSWORD_FILE_ENV: str(missing)})  # no error: nothing connects
    for name in ("DOCKER_HOST", "DOCKER_CONTEXT", "MIMIR_CLUSTER_BACKEND", "MIMIR_API_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MIMIR_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    monkeypatch.setenv(PASSWORD_FILE_ENV, str(missing))
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(
        "name: p\nsteps:\n  - name: echo\n    plugin: Debug.echo\n", encoding="utf-8"
    )
    expected = f"{PASSWORD_FILE_ENV}={missing}: cannot read it"
    for main, argv in (
        (worker_main, []),
        (server_main, ["--port", str(free_port())]),
        (enqueue_main, [str(pipeline)]),
    ):
        capsys.readouterr()
        assert main(argv) == 2
        assert expected in capsys.readouterr().err
    # `mimir cluster status` reads no Redis password: the stale variable is no matter.
    capsys.readouterr()
    assert cluster_main(["status", "--backend", "local", "--project", "stale"]) == 3  # none
    out, err = capsys.readouterr()
    assert "cluster 'stale' (local)" in out and PASSWORD_FILE_ENV not in err
