"""Waits and live views share the server's one subscription: 1,000 concurrent waits and
200 event-stream subscribers on one server process, while enqueue, status and health
answer as usual (no 503, Redis reported reachable)."""

from __future__ import annotations

import asyncio
import json
import resource
from collections.abc import Callable
from pathlib import Path

import httpx
import redis

from mimir.core.queue import JobQueue, JobSpec, Outcome, QueueConsumer, connect
from tests.helpers import RedisServer, ServerProcess, async_wait_until

WAITS = 1000
SUBSCRIBERS = 200
PIPELINE = {
    "name": "echo",
    "steps": [{"name": "s", "plugin": "Debug.sleep", "config": {"seconds": 0}}],
}


async def _subscriber(client: httpx.AsyncClient, seen: dict[str, int], index: int) -> None:
    async with client.stream("GET", "/api/v1/events") as response:
        assert response.status_code == 200
        kind = ""
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                kind = line.removeprefix("event: ")
                if kind == "stats":
                    seen.setdefault(f"stats:{index}", 1)
            elif line.startswith("data: ") and kind == "job":
                event = json.loads(line.removeprefix("data: "))
                if event.get("status") == "succeeded":
                    seen[f"succeeded:{index}"] = seen.get(f"succeeded:{index}", 0) + 1


def test_a_thousand_waits_and_two_hundred_streams_leave_the_api_answering(
    make_server: Callable[..., ServerProcess], redis_server: RedisServer
) -> None:
    # The server is started under the usual soft limit on open files (1024 in a fresh
    # container) and must raise its own; this process then needs 1,200+ sockets too.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, soft), hard))
    try:
        server = make_server(redis_url=redis_server.url).start()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert server.process is not None
    limits = Path(f"/proc/{server.process.pid}/limits").read_text()
    (line,) = [x for x in limits.splitlines() if x.startswith("Max open files")]
    assert int(line.split()[3]) >= min(4096, hard), line  # the soft limit, raised
    if soft < 4096 and (hard == resource.RLIM_INFINITY or hard >= 4096):
        resource.setrlimit(resource.RLIMIT_NOFILE, (4096, hard))
    admin = redis.Redis.from_url(redis_server.url)
    asyncio.run(_scenario(server, redis_server, admin))


async def _scenario(server: ServerProcess, redis_server: RedisServer, admin: redis.Redis) -> None:
    queue = JobQueue(connect(redis_server.url), prefix="mimir:", job_ttl=600)
    consumer = QueueConsumer(queue.redis, "test-consumer", prefix="mimir:", job_ttl=600)
    await consumer.ensure_groups()
    records = await queue.enqueue_many([JobSpec(payload={"n": i}) for i in range(WAITS)])
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    timeout = httpx.Timeout(120.0)
    seen: dict[str, int] = {}
    client = httpx.AsyncClient(base_url=server.base_url, limits=limits, timeout=timeout)
    async with client:
        streams = [asyncio.create_task(_subscriber(client, seen, i)) for i in range(SUBSCRIBERS)]

        async def all_subscribed() -> bool:
            return sum(k.startswith("stats:") for k in seen) == SUBSCRIBERS

        await async_wait_until(
            all_subscribed,
            timeout=60,
            message="every subscriber's first stats event",
        )
        waits = [
            asyncio.create_task(client.get(f"/api/v1/queue/jobs/{r.job_id}/wait?timeout=120s"))
            for r in records
        ]
        # Meanwhile the API answers as usual, and the server's Redis connections stay few.
        most_clients = 0
        for _ in range(10):
            enqueued = await client.post(
                "/api/v1/queue/pipelines/enqueue", json={"pipeline": PIPELINE}
            )
            assert enqueued.status_code == 202, enqueued.text
            status = await client.get("/api/v1/queue/status")
            assert status.status_code == 200, status.text
            health = await client.get("/health")
            assert health.status_code == 200 and health.json()["redis"] == "ok", health.text
            most_clients = max(most_clients, int(admin.info("clients")["connected_clients"]))
        assert not [w for w in waits if w.done() and w.result().status_code != 200]
        assert most_clients < 80, most_clients
        # End every job: each wait answers with its final record, each stream saw them.
        left = WAITS
        while left > 0:
            deliveries = await consumer.fetch(min(left, 500))
            assert deliveries, "jobs to finish"
            await consumer.finish([Outcome(d, "succeeded", result={"ok": 1}) for d in deliveries])
            left -= len(deliveries)
        answers = await asyncio.gather(*waits)
        assert {a.status_code for a in answers} == {200}
        bodies = [a.json() for a in answers]
        assert all(b["status"] == "succeeded" and not b["timed_out"] for b in bodies)
        assert {b["result"]["ok"] for b in bodies} == {1}

        async def all_seen() -> bool:
            return all(seen.get(f"succeeded:{i}", 0) >= WAITS for i in range(SUBSCRIBERS))

        await async_wait_until(
            all_seen,
            timeout=60,
            message="every subscriber saw every job succeed",
        )
        for task in streams:
            task.cancel()
        await asyncio.gather(*streams, return_exceptions=True)
    await queue.aclose()
    admin.close()
