"""What the queue's Redis says about a cluster's health, read in one pass for ``mimir doctor``.

:func:`collect` reads (never writes) Redis through the key names of
:class:`~mimir.core.queue.keys.QueueKeys`: the server answers it at
``GET /api/v1/diagnostics`` and the console's doctor (``mimir.app.services.doctor``) turns
it into findings. Every age is measured on Redis's clock (``TIME``), so a host whose clock
is off does not skew the figures; workers report their own offset from it in their
heartbeat (``clock_offset_ms``), measured around a ``TIME`` call.
"""

from __future__ import annotations

import json
import shutil
import time
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field
from redis.asyncio import Redis

from mimir.core.queue.keys import GROUP, PRIORITIES, QueueKeys

__all__ = [
    "ConsumerState",
    "DeadLetterState",
    "DiskState",
    "QueueSnapshot",
    "RedisState",
    "StreamState",
    "Throughput",
    "WorkerState",
    "collect",
    "disk_state",
]

#: Seconds of per-second throughput counters read (they expire after 120 s).
RATE_WINDOW = 60
#: Shortest window a throughput is computed over (seconds).
MIN_WINDOW = 5
#: Seconds back that count as "recent" for the dead-letter stream.
DEAD_WINDOW = 3600
#: Most recent dead-letter entries read to count them (the stream keeps MIMIR_JOB_TTL of
#: them: a mass failure must not make the doctor read a million entries).
DEAD_COUNT_MAX = 1000


class RedisState(BaseModel):
    version: str = ""
    used_memory: int = 0
    maxmemory: int = 0
    maxmemory_policy: str = ""
    #: ``aof_enabled`` and whether ``save`` has any rule (RDB snapshots).
    aof_enabled: bool = False
    rdb_enabled: bool = False
    aof_last_write_status: str = ""
    aof_last_bgrewrite_status: str = ""
    rdb_last_bgsave_status: str = ""
    rdb_changes_since_last_save: int = 0
    #: Redis's working directory (where AOF and RDB files go) on Redis's host.
    dir: str = ""
    evicted_keys: int = 0


class WorkerState(BaseModel):
    """One live worker, from its heartbeat hash."""

    worker_id: str
    hostname: str = ""
    pid: int = 0
    queues: list[str] = Field(default_factory=list)
    concurrency: int = 0
    current_jobs: list[str] = Field(default_factory=list)
    draining: bool = False
    #: The worker's own wall clock at its last heartbeat (seconds since the epoch).
    last_heartbeat: float | None = None
    #: Milliseconds until the heartbeat expires (Redis's ``PTTL``).
    heartbeat_ttl_ms: int | None = None
    #: From the worker: a ``TIME`` round trip, and its clock minus Redis's (ms).
    redis_rtt_ms: float | None = None
    clock_offset_ms: float | None = None


class ConsumerState(BaseModel):
    name: str
    pending: int = 0
    #: Milliseconds since the consumer last read or claimed from the stream.
    idle_ms: int = 0


class StreamState(BaseModel):
    queue: str
    priority: str
    key: str
    length: int = 0
    group: bool = False
    #: Entries never delivered (``XINFO GROUPS`` lag; Redis < 7 gives length - pending).
    lag: int = 0
    #: Delivered and not acknowledged: running, or held by a worker that died.
    pending: int = 0
    #: Age of the oldest entry not yet delivered (seconds, Redis's clock).
    oldest_waiting_s: float | None = None
    consumers: list[ConsumerState] = Field(default_factory=list)


class Throughput(BaseModel):
    window_s: int = RATE_WINDOW
    succeeded: int = 0
    failed: int = 0
    dead: int = 0
    cancelled: int = 0

    @property
    def ended(self) -> int:
        return self.succeeded + self.failed + self.dead + self.cancelled

    @property
    def per_second(self) -> float:
        return self.ended / self.window_s if self.window_s else 0.0


class DeadLetterState(BaseModel):
    total: int = 0
    window_s: int = DEAD_WINDOW
    #: Entries added within ``window_s`` (counted up to ``DEAD_COUNT_MAX``).
    recent: int = 0
    #: ``recent`` stopped at ``DEAD_COUNT_MAX``: there are at least that many.
    recent_capped: bool = False
    newest_age_s: float | None = None
    newest_error: str = ""


class DiskState(BaseModel):
    path: str
    free_bytes: int
    total_bytes: int


class QueueSnapshot(BaseModel):
    """Everything :func:`collect` read, as of ``redis_time`` (seconds, Redis's clock)."""

    redis_time: float
    #: A ``PING`` round trip from whoever collected (the server), in ms.
    rtt_ms: float
    redis: RedisState
    workers: list[WorkerState] = Field(default_factory=list)
    queues: list[str] = Field(default_factory=list)
    streams: list[StreamState] = Field(default_factory=list)
    scheduled: int = 0
    throughput: Throughput = Field(default_factory=Throughput)
    dead: DeadLetterState = Field(default_factory=DeadLetterState)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _int(value: Any, default: int = 0) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _id_ms(entry_id: Any) -> int:
    return _int(_text(entry_id).split("-", 1)[0])


def disk_state(path: str) -> DiskState | None:
    """Free and total bytes of the file system holding ``path`` (``None`` if it is not here)."""
    try:
        usage = shutil.disk_usage(path)
    except OSError:
        return None
    return DiskState(path=path, free_bytes=usage.free, total_bytes=usage.total)


async def _redis_state(redis: Redis) -> RedisState:
    info = await redis.info()
    save: Any = ""
    try:
        save = (await redis.config_get("save")).get("save", "")
        directory = (await redis.config_get("dir")).get("dir", "")
    except Exception:  # CONFIG may be renamed or refused (a managed Redis): leave it out
        directory = ""
    return RedisState(
        version=str(info.get("redis_version", "")),
        used_memory=_int(info.get("used_memory")),
        maxmemory=_int(info.get("maxmemory")),
        maxmemory_policy=str(info.get("maxmemory_policy", "")),
        aof_enabled=_int(info.get("aof_enabled")) == 1,
        rdb_enabled=bool(_text(save).strip()),
        aof_last_write_status=str(info.get("aof_last_write_status", "")),
        aof_last_bgrewrite_status=str(info.get("aof_last_bgrewrite_status", "")),
        rdb_last_bgsave_status=str(info.get("rdb_last_bgsave_status", "")),
        rdb_changes_since_last_save=_int(info.get("rdb_changes_since_last_save")),
        dir=_text(directory),
        evicted_keys=_int(info.get("evicted_keys")),
    )


async def _workers(redis: Redis, keys: QueueKeys) -> list[WorkerState]:
    ids = [_text(w) for w in await redis.zrange(keys.workers, 0, -1)]
    if not ids:
        return []
    async with redis.pipeline(transaction=False) as pipe:
        for worker_id in ids:
            pipe.hgetall(keys.worker(worker_id))
            pipe.pttl(keys.worker(worker_id))
        results = await pipe.execute()
    out = []
    for i, worker_id in enumerate(ids):
        raw, ttl = results[2 * i], results[2 * i + 1]
        if not raw:
            continue  # expired: its pending entries (if any) tell the rest
        data = {_text(k): _text(v) for k, v in raw.items()}
        last = data.get("last_heartbeat")
        last_ts: float | None = None
        if last:
            try:
                last_ts = datetime.fromisoformat(last).timestamp()
            except ValueError:
                last_ts = None
        out.append(
            WorkerState(
                worker_id=worker_id,
                hostname=data.get("hostname", ""),
                pid=_int(data.get("pid")),
                queues=json.loads(data.get("queues", "[]")),
                concurrency=_int(data.get("concurrency")),
                current_jobs=json.loads(data.get("current_jobs", "[]")),
                draining=data.get("draining") == "1",
                last_heartbeat=last_ts,
                heartbeat_ttl_ms=ttl if isinstance(ttl, int) and ttl >= 0 else None,
                redis_rtt_ms=_float(data.get("redis_rtt_ms")),
                clock_offset_ms=_float(data.get("clock_offset_ms")),
            )
        )
    return out


async def _stream(redis: Redis, queue: str, priority: str, key: str, now_ms: int) -> StreamState:
    state = StreamState(queue=queue, priority=priority, key=key)
    if not await redis.exists(key):
        return state
    state.length = _int(await redis.xlen(key))
    groups = await redis.xinfo_groups(key)
    group = next((g for g in groups if _text(g.get("name")) == GROUP), None)
    if group is None:
        state.lag = state.length
        first = await redis.xrange(key, "-", "+", count=1)
    else:
        state.group = True
        state.pending = _int(group.get("pending"))
        lag = group.get("lag")
        state.lag = _int(lag) if lag is not None else max(0, state.length - state.pending)
        last = _text(group.get("last-delivered-id", "0-0"))
        first = await redis.xrange(key, f"({last}", "+", count=1)
        for consumer in await redis.xinfo_consumers(key, GROUP):
            state.consumers.append(
                ConsumerState(
                    name=_text(consumer.get("name")),
                    pending=_int(consumer.get("pending")),
                    idle_ms=_int(consumer.get("idle")),
                )
            )
    if first and state.lag:
        state.oldest_waiting_s = max(0.0, (now_ms - _id_ms(first[0][0])) / 1000)
    return state


async def _throughput(redis: Redis, keys: QueueKeys, now: int) -> Throughput:
    # The last RATE_WINDOW seconds, this one (still going) included: jobs that ended a
    # moment ago count (a doctor run right after a burst saw only the burst's first
    # second). The rate is then a little high at most, by this second's share.
    async with redis.pipeline(transaction=False) as pipe:
        for second in range(now - RATE_WINDOW + 1, now + 1):
            pipe.hgetall(keys.rate(second))
        rates = await pipe.execute()
    out = Throughput()
    # Counted from the first second that saw a job end (a cluster started 10 s ago has a
    # 10 s window, not 60), at least MIN_WINDOW seconds.
    first = next((i for i, rate in enumerate(rates) if rate), None)
    if first is not None:
        out.window_s = max(MIN_WINDOW, RATE_WINDOW - first)
    for rate in rates:
        for field, count in (rate or {}).items():
            name = _text(field)
            if name in ("succeeded", "failed", "dead", "cancelled"):
                setattr(out, name, getattr(out, name) + _int(count))
    return out


async def _dead(redis: Redis, keys: QueueKeys, now_ms: int) -> DeadLetterState:
    state = DeadLetterState(total=_int(await redis.xlen(keys.dead)))
    if not state.total:
        return state
    since = now_ms - DEAD_WINDOW * 1000
    # Counted by id (the time Redis added each entry), newest first and bounded: the
    # stream may hold a day of failures, each with its error text.
    recent = await redis.xrevrange(keys.dead, "+", since, count=DEAD_COUNT_MAX)
    state.recent = len(recent or [])
    state.recent_capped = state.recent >= DEAD_COUNT_MAX
    newest = await redis.xrevrange(keys.dead, "+", "-", count=1)
    if newest:
        entry_id, fields = newest[0]
        state.newest_age_s = max(0.0, (now_ms - _id_ms(entry_id)) / 1000)
        data = {_text(k): _text(v) for k, v in (fields or {}).items()}
        state.newest_error = data.get("error", "")[:300]
    return state


async def collect(redis: Redis, keys: QueueKeys) -> QueueSnapshot:
    """Read the queue's state from ``redis`` (raises redis's errors when it does not answer)."""
    await redis.ping()  # may open the connection (TCP, TLS, AUTH): not the round trip
    started = time.perf_counter()
    await redis.ping()
    rtt_ms = (time.perf_counter() - started) * 1000
    seconds, micros = await redis.time()
    now_ms = seconds * 1000 + micros // 1000
    queues = sorted(_text(q) for q in await redis.smembers(keys.queues))
    workers = await _workers(redis, keys)
    served = {q for w in workers for q in w.queues}
    streams = [
        await _stream(redis, queue, priority, keys.stream(queue, priority), now_ms)
        for queue in sorted(set(queues) | served)
        for priority in PRIORITIES
    ]
    return QueueSnapshot(
        redis_time=now_ms / 1000,
        rtt_ms=round(rtt_ms, 2),
        redis=await _redis_state(redis),
        workers=workers,
        queues=queues,
        streams=streams,
        scheduled=_int(await redis.zcard(keys.scheduled)),
        throughput=await _throughput(redis, keys, now_ms // 1000),
        dead=await _dead(redis, keys, now_ms),
    )
