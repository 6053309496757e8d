"""Redis Cluster configuration, without a cluster: ``redis+cluster://`` URLs, the hash
tag the settings give the key prefix (every key the project builds then hashes to one
slot), and what is refused (a database other than 0, ``MIMIR_REDIS_MIN_REPLICAS``, an
untagged prefix on a cluster client, a script call that names no key, the Redis part of
a backup). The queue on a real cluster: tests/worker/test_redis_cluster.py."""

from __future__ import annotations

import asyncio
import inspect
from pathlib import Path
from typing import Any

import pytest
from redis.crc import key_slot

from mimir.core.backup.manifest import BackupError
from mimir.core.backup.redis_rdb import fetch_rdb
from mimir.core.backup.redis_rdb import redact_url as backup_redact
from mimir.core.queue import JobQueue, QueueConsumer, connect
from mimir.core.queue.connection import (
    ClusterURL,
    SentinelURL,
    is_cluster,
    is_cluster_url,
    parse_cluster_url,
    parse_sentinel_url,
    redis_password,
)
from mimir.core.queue.keys import QueueKeys, hash_tag, hash_tagged, require_hash_tag
from mimir.core.runstore.schedules import hook_delivery_key, hook_rate_key
from mimir.core.settings import Settings
from mimir.server.autoscaler import AutoscalerKeys
from mimir.server.backup import lock_key, project_of
from mimir.server.redaction import redact_url
from mimir.server.runs.backups import stats_key

URL = "redis+cluster://:s3cret@10.0.0.1:7000,[::1]:7001,node-c/0"


def test_parse_cluster_url() -> None:
    parsed = parse_cluster_url(URL)
    assert parsed == ClusterURL(
        (("10.0.0.1", 7000), ("::1", 7001), ("node-c", 6379)), None, "s3cret"
    )
    assert "s3cret" not in repr(parsed)
    assert parse_cluster_url("redis+cluster://u:p%40ss@h:1") == ClusterURL((("h", 1),), "u", "p@ss")
    assert parse_cluster_url("REDIS+CLUSTER://h:1,h:2/") == ClusterURL((("h", 1), ("h", 2)))
    assert parse_cluster_url("redis://h:6379/0") is None
    assert is_cluster_url(URL) and not is_cluster_url("redis+sentinel://h:1/s")
    for bad in (
        "redis+cluster://",
        "redis+cluster://h:x",
        "redis+cluster://:7000",
        "redis+cluster://h:1/1",
        "redis+cluster://h:1/0/x",
    ):
        with pytest.raises(ValueError):
            parse_cluster_url(bad)
    with pytest.raises(ValueError, match="only database 0"):
        parse_cluster_url("redis+cluster://h:1/2")
    # The host-list parser is shared with the Sentinel URL's.
    assert parse_sentinel_url("redis+sentinel://:pw@[::1]:1,h/svc/1") == SentinelURL(
        (("::1", 1), ("h", 26379)), "svc", 1, None, "pw"
    )


def test_cluster_password_never_shown_and_precedes_the_file(tmp_path: Path) -> None:
    for redact in (redact_url, backup_redact):
        shown = redact(URL)
        assert "s3cret" not in shown and shown.startswith("redis+cluster://")
        assert "10.0.0.1:7000" in shown
    secret = tmp_path / "pw"
    secret.write_text("from-file\n")
    env = {"MIMIR_REDIS_PASSWORD_FILE": str(secret)}
    assert redis_password(URL, env) == "s3cret"
    assert redis_password("redis+cluster://h:1,h:2", env) == "from-file"


def test_connect_makes_a_cluster_client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "pw"
    secret.write_text("from-file\n")
    monkeypatch.setenv("MIMIR_REDIS_PASSWORD_FILE", str(secret))
    client: Any = connect("redis+cluster://127.0.0.1:7000,127.0.0.1:7001", max_connections=2)
    assert is_cluster(client)
    assert [(n.host, n.port) for n in client.nodes_manager.startup_nodes.values()] == [
        ("127.0.0.1", 7000),
        ("127.0.0.1", 7001),
    ]
    assert client.connection_kwargs["password"] == "from-file"
    assert client.connection_kwargs["decode_responses"] is True
    own: Any = connect(URL)
    assert own.connection_kwargs["password"] == "s3cret"
    assert not is_cluster(connect("redis://127.0.0.1:1/0"))
    with pytest.raises(ValueError, match="MIMIR_REDIS_MIN_REPLICAS is not supported"):
        connect(URL, min_replicas=1)
    asyncio.run(client.aclose())
    asyncio.run(own.aclose())


def test_hash_tagged() -> None:
    cases = {
        "mimir:": "{mimir}:",
        "app:q:": "{app:q}:",
        "x": "{x}:",
        "{mimir}:": "{mimir}:",
        "pre{tag}post:": "pre{tag}post:",
        "{}:": "{{}}:",  # an empty tag is no tag: wrapped
        "a{b:": "{a{b}:",  # an unclosed brace: wrapped whole
        "a}b{": "{a}b{}:",
    }
    for prefix, tagged in cases.items():
        assert hash_tagged(prefix) == tagged, prefix
        assert hash_tagged(tagged) == tagged  # idempotent
        assert hash_tag(tagged)
    assert hash_tag("mimir:") is None and hash_tag("{mimir}:") == "mimir"
    for empty in ("", ":", "::"):
        with pytest.raises(ValueError, match="empty"):
            hash_tagged(empty)


def _all_keys(prefix: str) -> list[str]:
    """Every Redis key (and channel) the project builds from ``prefix``, with ids,
    queue names and idempotency keys holding braces of their own."""
    odd = "{x}id}{"
    found: list[str] = []
    for factory in (QueueKeys(prefix), AutoscalerKeys(prefix)):
        for name, member in inspect.getmembers(type(factory)):
            if name.startswith("_"):
                continue
            if isinstance(member, property):
                found.append(getattr(factory, name))
            elif inspect.isfunction(member):
                method = getattr(factory, name)
                params = list(inspect.signature(method).parameters)
                if name == "ending":
                    found.extend(method(1_700_000_000_123).values())
                elif name == "rate":
                    found.append(method(1_700_000_000))
                else:
                    found.append(method(*([odd] * len(params))))
    settings = Settings(key_prefix=prefix)
    found += [
        lock_key(settings),
        stats_key(settings),
        f"{prefix}alerting:leader",  # server/runs/alerting.py
        f"{prefix}alerting:cursor",
        hook_delivery_key(prefix, odd, odd),
        hook_rate_key(prefix, odd, 28_333_333),
        QueueKeys(prefix).idempotency(f"schedule:{odd}:1700000000000"),
    ]
    return found


def test_every_key_of_a_tagged_prefix_is_in_one_slot() -> None:
    for prefix in ("mimir:", "team-a:", "{x}:"):
        tagged = hash_tagged(prefix)
        keys = _all_keys(tagged)
        assert len(keys) > 40 and all(isinstance(k, str) for k in keys)
        assert all(k.startswith(tagged) for k in keys)
        slots = {key_slot(k.encode()) for k in keys}
        assert slots == {key_slot(tagged.encode())}, prefix
    # Untagged, they spread (why the settings tag a cluster's prefix).
    assert len({key_slot(k.encode()) for k in _all_keys("mimir:")}) > 10
    assert key_slot(b"{mimir}:") == key_slot(b"mimir")


def test_settings_tag_the_prefix_for_a_cluster_url() -> None:
    cluster = {"REDIS_URL": "redis+cluster://a:7000,b:7001"}
    assert Settings.from_env(cluster).key_prefix == "{mimir}:"
    assert Settings.from_env({**cluster, "MIMIR_KEY_PREFIX": "team-a:"}).key_prefix == "{team-a}:"
    assert Settings.from_env({**cluster, "MIMIR_KEY_PREFIX": "{t}:"}).key_prefix == "{t}:"
    # Standalone and Sentinel keep their keys as they are (no migration).
    assert Settings.from_env({"REDIS_URL": "redis://a:6379/0"}).key_prefix == "mimir:"
    sentinel = {"REDIS_URL": "redis+sentinel://a:1/svc/0"}
    assert Settings.from_env(sentinel).key_prefix == "mimir:"
    with pytest.raises(ValueError, match=r"MIMIR_REDIS_MIN_REPLICAS is not supported.*WAIT"):
        Settings.from_env({**cluster, "MIMIR_REDIS_MIN_REPLICAS": "1"})
    with pytest.raises(ValueError, match="only database 0"):
        Settings.from_env({"REDIS_URL": "redis+cluster://a:7000/3"})
    # Backups are named as before: {mimir} is the default project.
    assert project_of(Settings.from_env(cluster)) == ""
    assert project_of(Settings(key_prefix="{team-a}:")) == "team-a"


def test_a_cluster_client_refuses_an_untagged_prefix() -> None:
    client: Any = connect("redis+cluster://127.0.0.1:7000")
    with pytest.raises(ValueError, match=r"no hash tag.*'\{mimir\}:'"):
        JobQueue(client, "mimir:")
    with pytest.raises(ValueError, match="no hash tag"):
        QueueConsumer(client, "w", prefix="team:")
    JobQueue(client, "{mimir}:")
    QueueConsumer(client, "w", prefix="{mimir}:")
    require_hash_tag(connect("redis://127.0.0.1:1/0"), "mimir:")  # standalone: any prefix
    asyncio.run(client.aclose())


def test_backup_refuses_a_cluster(tmp_path: Path) -> None:
    with pytest.raises(BackupError, match=r"Redis Cluster.*BGSAVE") as caught:
        fetch_rdb(URL, tmp_path / "dump.rdb", timeout=5)
    assert "s3cret" not in str(caught.value)
    assert not list(tmp_path.iterdir())
