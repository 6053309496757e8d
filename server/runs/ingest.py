"""Outcomes into runs: the server consumes the queue's outcome stream into the run store.

Every job that reaches a final status leaves one entry on ``{prefix}outcomes`` (written
by the queue's scripts in the same step as the status change). Each server reads that
stream in the consumer group ``runstore`` under a consumer name of its own, so with
several servers each entry goes to one of them:

1. read up to :data:`BATCH` entries (``XREADGROUP``, blocking at most :data:`BLOCK_MS`);
2. read the jobs' payloads (pipeline definition and context) from their hashes in one
   pipelined round trip;
3. upsert the runs in one transaction (a thread; idempotent by job id);
4. only then ``XACK`` and ``XDEL`` the entries, and release what Redis no longer needs
   for those jobs (:meth:`JobQueue.release`; not for failed and dead jobs, which the
   dead letter may retry: they expire with the job TTL).

A server killed between 3 and 4 leaves its entries pending in the group: every server
claims entries pending longer than :data:`CLAIM_IDLE` seconds (``XAUTOCLAIM``) at start
and every :data:`CLAIM_EVERY` seconds, and stores them again (the upsert makes the second
store a no-op). Redis outages and database errors are retried with a growing pause
(logged once per outage, never a busy loop); nothing is acknowledged before its commit.

A second task prunes runs past ``MIMIR_RUN_RETENTION`` days and beyond ``MIMIR_RUN_MAX``
every :data:`PRUNE_EVERY` seconds (short batches in a thread: the API is never blocked).

``MIMIR_INGEST=off`` runs a server that does not consume the stream (the Redis soak
benchmark measures the queue without release that way); ``MIMIR_INGEST_CLAIM_IDLE``
(seconds, default 30) sets :data:`CLAIM_IDLE`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError

from mimir.core.logtext import printable
from mimir.core.queue import JobQueue
from mimir.core.queue.connection import connect
from mimir.core.queue.errors import is_oom
from mimir.core.queue.keys import QueueKeys
from mimir.core.runstore.runs import RunStore, run_from_outcome
from mimir.core.settings import Settings

__all__ = ["GROUP", "Ingest", "IngestStatus", "start"]

logger = logging.getLogger(__name__)

#: The consumer group every server reads the outcome stream in.
GROUP = "runstore"
#: Most entries stored in one transaction.
BATCH = 500
#: Longest blocking read (ms); short enough that a stop is quick.
BLOCK_MS = 1000
#: After a read that did not fill a batch, how long (s) more entries may gather.
LINGER = 0.05
#: Entries pending this long (s) in the group belong to a consumer that died mid-batch.
CLAIM_IDLE = 30.0
#: Seconds between claims of such entries.
CLAIM_EVERY = 15.0
#: Seconds between prunes of old runs (the first comes soon after start).
PRUNE_EVERY = 300.0
PRUNE_FIRST = 10.0
#: Longest pause between retries of Redis or the database.
MAX_BACKOFF = 5.0
#: Final statuses whose Redis copies are released once their runs are stored (failed and
#: dead jobs wait in the dead letter, where a retry needs their records).
RELEASED = frozenset({"succeeded", "cancelled"})
#: Consumers with nothing pending and idle this long (ms) are removed from the group.
STALE_CONSUMER_MS = 3600 * 1000


def _env_float(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, "") or default)
    except ValueError:
        logger.warning("%s=%r is not a number; using %s", name, os.environ.get(name), default)
        return default


def consumer_name() -> str:
    """This server process's consumer name: host, pid and a random part."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@dataclass
class IngestStatus:
    """What the ingest has done (for ``GET /api/v1/runs/status``)."""

    consumer: str = ""
    enabled: bool = True
    stored: int = 0
    batches: int = 0
    claimed: int = 0
    skipped: int = 0
    released: int = 0
    pruned: int = 0
    last_batch_at: datetime | None = None
    last_prune_at: datetime | None = None
    last_error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class _Outage:
    """Logs a failing dependency once per outage, and how long its next pause is."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.failures = 0

    def failed(self, exc: BaseException, status: IngestStatus) -> float:
        self.failures += 1
        status.last_error = f"{self.what}: {exc}"
        if self.failures == 1:
            logger.warning("run ingest: %s unavailable (%s); retrying", self.what, exc)
        else:
            logger.debug("run ingest: %s still unavailable (%s)", self.what, exc)
        return float(min(MAX_BACKOFF, 0.1 * 2 ** min(self.failures, 10)))

    def ok(self, status: IngestStatus) -> None:
        if self.failures:
            logger.info("run ingest: %s available again", self.what)
            status.last_error = None
        self.failures = 0


class Ingest:
    """The consumer of one server process (see the module doc)."""

    def __init__(self, redis: Redis, engine: Engine, settings: Settings) -> None:
        self.redis = redis
        self.store = RunStore(engine)
        self.settings = settings
        self.keys = QueueKeys(settings.key_prefix)
        self.stream = self.keys.outcomes
        self.jobs = JobQueue(redis, settings.key_prefix, settings.job_ttl)
        self.status = IngestStatus(consumer=consumer_name())
        self.claim_idle = _env_float("MIMIR_INGEST_CLAIM_IDLE", CLAIM_IDLE)
        self._redis_outage = _Outage("Redis")
        self._db_outage = _Outage("the run store's database")
        self._group_ready = False

    @property
    def consumer(self) -> str:
        return self.status.consumer

    # -- Redis side ----------------------------------------------------------------------

    async def ensure_group(self) -> None:
        """Create the group (and the stream) from the stream's start, once."""
        try:
            await self.redis.xgroup_create(self.stream, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" in str(exc):
                pass
            elif is_oom(exc):
                # A full Redis refuses XGROUP CREATE even for a group that exists; one
                # that does not cannot be made now (the next read retries).
                groups = (
                    await self.redis.xinfo_groups(self.stream)
                    if await self.redis.exists(self.stream)
                    else []
                )
                if not any(g.get("name") == GROUP for g in groups):
                    raise
            else:
                raise
        self._group_ready = True

    async def read(self) -> list[tuple[str, dict[str, str]]]:
        """New entries for this consumer (waiting up to :data:`BLOCK_MS` for the first)."""
        if not self._group_ready:
            await self.ensure_group()
        try:
            answer = await self.redis.xreadgroup(
                GROUP, self.consumer, {self.stream: ">"}, count=BATCH, block=BLOCK_MS
            )
        except ResponseError as exc:
            if "NOGROUP" in str(exc):  # Redis lost its data (a restart without AOF)
                self._group_ready = False
                return []
            raise
        entries = _entries(answer)
        if entries and len(entries) < BATCH:
            await asyncio.sleep(LINGER)  # let a burst gather into one transaction
            more = await self.redis.xreadgroup(
                GROUP, self.consumer, {self.stream: ">"}, count=BATCH - len(entries)
            )
            entries += _entries(more)
        return entries

    async def claim(self) -> list[tuple[str, dict[str, str]]]:
        """Entries pending longer than the claim idle time (a dead consumer's), now ours."""
        if not self._group_ready:
            await self.ensure_group()
        claimed: list[tuple[str, dict[str, str]]] = []
        start = "0-0"
        min_idle = int(self.claim_idle * 1000)
        while len(claimed) < BATCH:
            answer = await self.redis.xautoclaim(
                self.stream, GROUP, self.consumer, min_idle, start, count=BATCH - len(claimed)
            )
            start, found = answer[0], answer[1]
            deleted = answer[2] if len(answer) > 2 else []
            if deleted:  # pending ids whose entries are gone: nothing to store
                await self.redis.xack(self.stream, GROUP, *deleted)
            claimed += [(entry_id, fields) for entry_id, fields in found if fields]
            if start in ("0-0", b"0-0"):
                break
        if claimed:
            self.status.claimed += len(claimed)
            logger.info("run ingest: claimed %d entries of a stopped server", len(claimed))
        return claimed

    async def forget_stale_consumers(self) -> None:
        """Remove consumers of stopped servers that hold nothing (they only add up)."""
        consumers = await self.redis.xinfo_consumers(self.stream, GROUP)
        for info in consumers:
            name = str(info.get("name"))
            if name == self.consumer or int(info.get("pending", 0)):
                continue
            if int(info.get("idle", 0)) > STALE_CONSUMER_MS:
                await self.redis.xgroup_delconsumer(self.stream, GROUP, name)

    async def payloads(self, job_ids: Sequence[str]) -> list[dict[str, Any] | None]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hget(self.keys.job(job_id), "payload")
            raws = await pipe.execute()
        out: list[dict[str, Any] | None] = []
        for raw in raws:
            try:
                value = json.loads(raw) if raw else None
            except ValueError:
                value = None
            out.append(value if isinstance(value, dict) else None)
        return out

    async def acknowledge(self, entry_ids: Sequence[str]) -> None:
        if not entry_ids:
            return
        # Not a transaction: a full Redis (maxmemory) refuses every command queued in one,
        # but takes XACK and XDEL, which free memory (and so does the release after).
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xack(self.stream, GROUP, *entry_ids)
            pipe.xdel(self.stream, *entry_ids)
            await pipe.execute()

    # -- one batch -----------------------------------------------------------------------

    async def handle(self, entries: list[tuple[str, dict[str, str]]]) -> None:
        """Store ``entries`` as runs, then acknowledge them and release their jobs.
        Returns only once done (retrying Redis and the database as long as it takes)."""
        parsed: dict[str, tuple[dict[str, str], dict[str, Any] | None]] = {}
        for entry_id, fields in entries:
            try:
                job_id = fields["job"]
                record = json.loads(fields["record"])
                detail_text = fields.get("detail") or ""
                detail = json.loads(detail_text) if detail_text else None
                if not isinstance(record, dict):
                    raise ValueError("record is not an object")
            except (KeyError, ValueError) as exc:
                self.status.skipped += 1
                logger.error(
                    "run ingest: outcome %s is malformed (%s), skipped: %.500r",
                    entry_id,
                    exc,
                    fields,
                )
                continue
            record = {
                str(k): v if isinstance(v, str) else json.dumps(v)
                for k, v in record.items()
                if v is not None
            }
            record.setdefault("job_id", job_id)
            parsed.pop(job_id, None)  # the newest outcome of a job wins
            parsed[job_id] = (record, detail if isinstance(detail, dict) else None)
        job_ids = list(parsed)
        payloads = await self._retry_redis(lambda: self.payloads(job_ids)) if job_ids else []
        runs = []
        for (record, detail), payload in zip(parsed.values(), payloads, strict=True):
            try:
                runs.append(run_from_outcome(record, detail, payload))
            except Exception as exc:
                self.status.skipped += 1
                logger.error(
                    "run ingest: job %s's outcome cannot be stored (%s), skipped",
                    record.get("job_id"),
                    exc,
                )
        for run in runs:
            if run.status == "dead":  # once per job: one server consumes each outcome
                logger.error(
                    "job %s is dead (in the dead letter): %s",
                    run.job_id,
                    printable(run.error or "no error recorded"),
                    extra={"job_id": run.job_id, "pipeline": run.pipeline},
                )
        stored = await self._store(runs) if runs else []
        await self._retry_redis(lambda: self.acknowledge([entry_id for entry_id, _ in entries]))
        self.status.stored += len(stored)
        self.status.batches += 1
        self.status.last_batch_at = datetime.now(UTC)
        # Failed and dead jobs stay (in the dead letter) until the job TTL: a retry from
        # there needs the record. Everything else is released now.
        status_of = {run.job_id: run.status for run in runs}
        releasable = [job_id for job_id in stored if status_of.get(job_id) in RELEASED]
        if releasable:
            try:
                self.status.released += int(await self.jobs.release(releasable))
            except Exception as exc:  # the records then expire with the job TTL
                logger.info("run ingest: cannot release %d jobs (%s)", len(releasable), exc)

    async def _store(self, runs: list[Any]) -> list[str]:
        """Upsert ``runs``; the ids stored. A database that is down is waited for; a run
        the database refuses for itself (a constraint, a value) is logged and skipped."""
        while True:
            try:
                await asyncio.to_thread(self.store.upsert, runs)
                self._db_outage.ok(self.status)
                return [run.job_id for run in runs]
            except (OperationalError, DBAPIError) as exc:
                if not isinstance(exc, OperationalError) and not exc.connection_invalidated:
                    break  # the data, not the database: store one by one below
                await asyncio.sleep(self._db_outage.failed(exc, self.status))
            except SQLAlchemyError:
                break
        stored: list[str] = []
        for run in runs:
            try:
                await asyncio.to_thread(self.store.upsert, [run])
                stored.append(run.job_id)
            except OperationalError as exc:  # the database went away meanwhile: again
                await asyncio.sleep(self._db_outage.failed(exc, self.status))
                return stored + await self._store(runs[len(stored) :])
            except Exception as exc:
                self.status.skipped += 1
                logger.error("run ingest: run %s refused by the database: %s", run.job_id, exc)
        return stored

    async def _retry_redis(self, call: Any) -> Any:
        while True:
            try:
                result = await call()
                self._redis_outage.ok(self.status)
                return result
            except (RedisError, OSError) as exc:
                await asyncio.sleep(self._redis_outage.failed(exc, self.status))

    # -- the loops -----------------------------------------------------------------------

    async def run(self) -> None:
        """Consume until cancelled."""
        last_claim = 0.0
        while True:
            try:
                if time.monotonic() - last_claim >= CLAIM_EVERY:
                    last_claim = time.monotonic()
                    claimed = await self.claim()
                    if claimed:
                        await self.handle(claimed)
                        last_claim = 0.0  # there may be more
                        continue
                    await self.forget_stale_consumers()
                entries = await self.read()
                self._redis_outage.ok(self.status)
                if entries:
                    await self.handle(entries)
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                await asyncio.sleep(self._redis_outage.failed(exc, self.status))
            except Exception as exc:  # a bug: log it, pause, go on (never spin)
                self.status.last_error = str(exc)
                logger.exception("run ingest: unexpected error")
                await asyncio.sleep(MAX_BACKOFF)

    async def prune_once(self) -> int:
        settings = self.settings
        older_than = datetime.now(UTC) - timedelta(days=settings.run_retention_days)
        removed = int(await asyncio.to_thread(self.store.prune, older_than, settings.run_max_count))
        self.status.pruned += removed
        self.status.last_prune_at = datetime.now(UTC)
        if removed:
            logger.info("run store: pruned %d runs", removed)
        return removed

    async def prune(self) -> None:
        """Prune old runs every :data:`PRUNE_EVERY` seconds until cancelled."""
        await asyncio.sleep(PRUNE_FIRST)
        while True:
            try:
                await self.prune_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning("run store: pruning failed (%s); next try later", exc)
            await asyncio.sleep(PRUNE_EVERY)

    async def lag(self) -> dict[str, int]:
        """Entries on the stream and entries delivered but not yet acknowledged."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xlen(self.stream)
            pipe.xpending(self.stream, GROUP)
            length, pending = await pipe.execute(raise_on_error=False)
        return {
            "stream_length": int(length) if isinstance(length, int) else 0,
            "pending": int(pending["pending"]) if isinstance(pending, dict) else 0,
        }


def _entries(answer: Any) -> list[tuple[str, dict[str, str]]]:
    """``XREADGROUP``'s answer as ``(entry id, fields)``, for either reply shape."""
    if not answer:
        return []
    out: list[tuple[str, dict[str, str]]] = []
    for _stream, entries in answer:
        for entry_id, fields in entries:
            if fields:
                out.append((cast(str, entry_id), cast(dict[str, str], fields)))
    return out


async def start(app: Any) -> list[asyncio.Task[None]]:
    """Start the ingest and the pruner for ``app`` (its settings and database)."""
    settings: Settings = app.state.settings
    engine: Engine = app.state.db
    if os.environ.get("MIMIR_INGEST", "").strip().lower() in {"off", "0", "false", "no"}:
        logger.warning("run ingest is off (MIMIR_INGEST=off): finished jobs are not stored")
        app.state.ingest = None
        return []
    redis = connect(
        settings.redis_url,
        socket_connect_timeout=2.0,
        socket_timeout=BLOCK_MS / 1000 + 10.0,
        max_connections=4,
    )
    ingest = Ingest(redis, engine, settings)
    app.state.ingest = ingest

    async def consume() -> None:
        try:
            await ingest.run()
        finally:
            await redis.aclose()

    return [
        asyncio.create_task(consume(), name="run-ingest"),
        asyncio.create_task(ingest.prune(), name="run-prune"),
    ]
