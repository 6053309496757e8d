"""redis+sentinel:// URLs, MIMIR_REDIS_SENTINELS, passwords kept out of logs, and the
WAIT of MIMIR_REDIS_MIN_REPLICAS (the failover itself: tests/worker/test_sentinel_failover)."""

from __future__ import annotations

import asyncio

import pytest

from mimir.core.backup.redis_rdb import redact_url as backup_redact
from mimir.core.queue import JobQueue, JobSpec, connect
from mimir.core.queue.connection import (
    NotReplicatedError,
    SentinelURL,
    parse_sentinel_url,
    replication_wait,
)
from mimir.core.queue.errors import QueueUnavailableError
from mimir.core.settings import Settings
from mimir.server.redaction import redact_url
from tests.helpers import RedisServer

URL = "redis+sentinel://:s3cret@127.0.0.1:26379,[::1]:26380,sentinel-c/mymaster/2"


def test_parse_sentinel_url() -> None:
    parsed = parse_sentinel_url(URL)
    assert parsed == SentinelURL(
        (("127.0.0.1", 26379), ("::1", 26380), ("sentinel-c", 26379)), "mymaster", 2, None, "s3cret"
    )
    assert "s3cret" not in repr(parsed)
    assert parse_sentinel_url("redis+sentinel://h:1/svc") == SentinelURL((("h", 1),), "svc", 0)
    assert parse_sentinel_url("redis://h:6379/0") is None
    for bad in ("redis+sentinel://h:1/", "redis+sentinel:///svc", "redis+sentinel://h:x/svc"):
        with pytest.raises(ValueError):
            parse_sentinel_url(bad)


def test_password_never_shown() -> None:
    for redact in (redact_url, backup_redact):
        shown = redact(URL)
        assert "s3cret" not in shown
        assert shown.startswith("redis+sentinel://:***@127.0.0.1:26379,[::1]:26380,sentinel-c/")


def test_sentinels_from_env() -> None:
    settings = Settings.from_env(
        {
            "MIMIR_REDIS_SENTINELS": "a:26379, b:26380",
            "MIMIR_REDIS_SERVICE": "queue",
            "REDIS_URL": "redis://:pw@ignored:6379/3",
            "MIMIR_REDIS_MIN_REPLICAS": "1",
        }
    )
    assert settings.redis_url == "redis+sentinel://:pw@a:26379,b:26380/queue/3"
    assert settings.redis_url_set
    assert settings.redis_min_replicas == 1
    assert Settings.from_env({"MIMIR_REDIS_SENTINELS": "a:1"}).redis_url == (
        "redis+sentinel://a:1/mymaster/0"
    )
    with pytest.raises(ValueError, match="MIMIR_REDIS_MIN_REPLICAS"):
        Settings.from_env({"MIMIR_REDIS_MIN_REPLICAS": "-1"})


def test_enqueue_without_the_replicas_it_needs_is_refused(redis_server: RedisServer) -> None:
    """A Redis with no replica and MIN_REPLICAS=1: the enqueue answers an error saying why
    (the API's 503); the job is on the primary, and a retry with the same idempotency key
    returns it rather than enqueuing a second one."""

    async def scenario() -> None:
        client = connect(redis_server.url, min_replicas=1, wait_timeout_ms=50)
        plain = connect(redis_server.url)
        try:
            assert replication_wait(client) == (1, 50)
            assert replication_wait(plain) == (0, 0)
            spec = JobSpec(type="pipeline", payload={}, idempotency_key="order-1")
            with pytest.raises(QueueUnavailableError, match="did not replicate") as caught:
                await JobQueue(client).enqueue(spec)
            assert isinstance(caught.value.__cause__, NotReplicatedError)
            assert "only 0 of 1 required replica(s)" in str(caught.value)
            first = await JobQueue(plain).enqueue(spec)  # the retry (here without WAIT)
            again = await JobQueue(plain).enqueue(spec)
            assert first.job_id == again.job_id
            assert await plain.zcard("mimir:jobs") == 1
        finally:
            await client.aclose()
            await plain.aclose()

    asyncio.run(scenario())
