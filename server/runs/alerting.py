"""The alert evaluator: watches the queue and the run store, fires and resolves alerts.

Every server runs one, but only the holder of a Redis lease (``{prefix}alerting:leader``,
``SET NX PX`` renewed every tick, :data:`LEASE_MS`) evaluates, so one incident is one
notification however many servers there are; when it stops, another takes over within
the lease. Each tick (:data:`TICK` seconds) the leader reads every enabled rule and:

- ``run_failed``: reads the dead-letter stream from its cursor (kept in Redis at
  ``{prefix}alerting:cursor``, so a new leader goes on where the last one stopped): every
  failed or dead job is seen within a tick. The incident resolves when every job it
  lists has left the dead letter (retried or deleted), or when a later run of each of
  its pipelines succeeded (from the run store), or after ``quiet_seconds`` without a new
  matching failure.
- ``failure_rate``: counts the run store's runs of the window.
- ``backlog``: queue length (per pool or all) and the age of the oldest waiting job
  (first undelivered stream entry).
- ``worker_lost``: remembers which jobs each live worker held at its last heartbeat; a
  worker whose heartbeat vanished without a clean exit (still registered, or its jobs
  still running under it) while it held jobs is lost; the incident resolves once no job
  is left running under a lost worker (another worker took them over after the lease).
- ``schedule_missed``: a schedule's next tick more than ``grace_seconds`` overdue, or its
  last tick not enqueued (``last_error``).

A firing incident is stored in ``alerts`` and notified once per channel (in a task, with
retries; the attempts are recorded on the alert); a new incident of the same rule within
``cooldown_seconds`` of the last notification is recorded but not notified. When the
condition clears, one ``resolved`` notification goes to the channels that were told.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import Engine, and_, func, or_, select

from mimir.core.queue import JobQueue, QueueUnavailableError
from mimir.core.queue.keys import GROUP, PRIORITIES
from mimir.core.runstore.alerts import Alert, AlertStore, Rule
from mimir.core.runstore.notify import ATTEMPTS, channel_target, deliver
from mimir.core.settings import Settings
from mimir.server.lease import RedisLease

__all__ = ["LEASE_MS", "TICK", "Evaluator", "start"]

logger = logging.getLogger(__name__)

#: Seconds between two evaluations.
TICK = 1.0
#: The leader's lease; renewed every tick, taken over by another server once it lapses.
LEASE_MS = 5000
#: On taking the lease, deliveries of the newest alerts (at most this many, started within
#: this many seconds) that a previous leader left unfinished are resumed.
RESUME_SCAN = 200
RESUME_WITHIN = 24 * 3600
#: Jobs listed in one run_failed incident's details (more are counted, not listed).
MAX_LISTED = 100


def _id_ms(entry_id: str) -> int:
    return int(entry_id.split("-", 1)[0])


def _runs_table() -> Any:
    try:
        from mimir.core.runstore import runs as runs_module
    except ImportError:  # the run store's runs are not there (yet)
        return None
    return getattr(runs_module, "runs", None)


def _schedules_table() -> Any:
    try:
        from mimir.core.runstore import schedules as schedules_module
    except ImportError:
        return None
    return getattr(schedules_module, "schedules", None)


class Evaluator:
    def __init__(self, settings: Settings, redis: Redis, engine: Engine) -> None:
        self.settings = settings
        self.redis = redis
        self.engine = engine
        self.store = AlertStore(engine)
        self.queue = JobQueue(redis, settings.key_prefix, settings.job_ttl)
        self.server_id = uuid.uuid4().hex[:12]
        prefix = settings.key_prefix
        self.lease_key = f"{prefix}alerting:leader"
        self.lease = RedisLease(redis, self.lease_key, self.server_id, LEASE_MS)
        self.cursor_key = f"{prefix}alerting:cursor"
        self.leader = False
        #: Jobs each live worker held at its last heartbeat seen (leader only).
        self.seen_workers: dict[str, list[str]] = {}
        #: Lost workers and the jobs they held, until those jobs are taken over.
        self.lost_workers: dict[str, list[str]] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        #: Attempts are appended to an alert's JSON list: one writer at a time.
        self._record_lock = asyncio.Lock()
        self._last_error = 0.0

    # -- leadership --------------------------------------------------------------------

    async def lead(self) -> bool:
        if self.leader:
            if await self.lease.renew():
                return True
            logger.info("alerting: lease lost; another server evaluates")
            self.leader = False
            self.seen_workers.clear()
            self.lost_workers.clear()
        if await self.lease.take():
            logger.info("alerting: this server (%s) evaluates the alert rules", self.server_id)
            self.leader = True
            await self._resume()
        return self.leader

    async def release(self) -> None:
        if self.leader:
            with contextlib.suppress(Exception):
                await self.lease.release()
        self.leader = False

    async def run(self) -> None:
        try:
            while True:
                try:
                    if await self.lead():
                        await self.evaluate()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    if time.monotonic() - self._last_error > 60:
                        self._last_error = time.monotonic()
                        # Redis away, full or refusing the password is an outage, said in
                        # a line; anything else is a bug, logged with its traceback.
                        outage = isinstance(exc, RedisError | OSError | QueueUnavailableError)
                        logger.warning(
                            "alerting: evaluation failed: %s: %s (trying again)",
                            type(exc).__name__,
                            exc,
                            exc_info=not outage,
                        )
                await asyncio.sleep(TICK)
        finally:
            for task in list(self.tasks):
                task.cancel()
            with contextlib.suppress(Exception):
                await asyncio.shield(self.release())

    # -- one tick ----------------------------------------------------------------------

    async def evaluate(self) -> None:
        rules = await asyncio.to_thread(self.store.rules, True)
        firing = await asyncio.to_thread(self.store.firing)
        by_id = {rule.id: rule for rule in rules}
        # Firing alerts of rules since disabled: resolved (and said so).
        for rule_id, alert in firing.items():
            if rule_id not in by_id:
                await self._resolve(alert, {**alert.details, "resolved_by": "rule disabled"}, None)
        kinds = {rule.kind for rule in rules}
        failures = await self._new_failures() if "run_failed" in kinds else []
        if "run_failed" not in kinds:
            await self._skip_failures()
        status = await self.queue.status() if "backlog" in kinds else None
        lost = await self._lost_workers() if "worker_lost" in kinds else {}
        for rule in rules:
            current = firing.get(rule.id)
            try:
                verdict = await self._check(rule, current, failures, status, lost)
            except Exception as exc:
                logger.warning("alerting: rule %s (%s) not evaluated: %s", rule.id, rule.kind, exc)
                continue
            if verdict is None:
                continue
            active, summary, details = verdict
            if active and current is None:
                await self._fire(rule, summary, details)
            elif active and current is not None:
                if details != current.details or summary != current.summary:
                    await asyncio.to_thread(self.store.update_details, current.id, summary, details)
            elif not active and current is not None:
                await self._resolve(current, details, rule)

    async def _check(
        self,
        rule: Rule,
        current: Alert | None,
        failures: list[dict[str, Any]],
        status: Any,
        lost: dict[str, dict[str, Any]],
    ) -> tuple[bool, str, dict[str, Any]] | None:
        spec = rule.spec
        if rule.kind == "run_failed":
            return await self._run_failed(spec, current, failures)
        if rule.kind == "failure_rate":
            return await asyncio.to_thread(self._failure_rate, spec)
        if rule.kind == "backlog":
            return await self._backlog(spec, status)
        if rule.kind == "worker_lost":
            if lost:
                workers = ", ".join(sorted(lost))
                return True, f"worker lost while holding jobs: {workers}", {"workers": lost}
            return (
                False,
                current.summary if current else "",
                {
                    **(current.details if current else {}),
                    "resolved_by": "every job of the lost workers was taken over or ended",
                },
            )
        if rule.kind == "schedule_missed":
            return await asyncio.to_thread(self._schedule_missed, spec, current)
        return None

    # -- run_failed --------------------------------------------------------------------

    async def _cursor(self) -> str:
        cursor = await self.redis.get(self.cursor_key)
        if not cursor:
            cursor = f"{int(time.time() * 1000)}-0"
            await self.redis.set(self.cursor_key, cursor)
        return str(cursor)

    async def _skip_failures(self) -> None:
        """No run_failed rule: the cursor follows the stream (a rule added later does not
        fire for old failures)."""
        await self.redis.set(self.cursor_key, f"{int(time.time() * 1000)}-0")

    async def _new_failures(self) -> list[dict[str, Any]]:
        cursor = await self._cursor()
        entries = cast(
            list[tuple[str, dict[str, str]]],
            await self.redis.xrange(self.queue.keys.dead, f"({cursor}", "+", count=1000) or [],
        )
        if not entries:
            return []
        job_ids = [fields.get("job_id", "") for _, fields in entries]
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hget(self.queue.keys.job(job_id), "pipeline")
            names = await pipe.execute()
        missing = [j for j, name in zip(job_ids, names, strict=True) if not name]
        stored = await asyncio.to_thread(self._pipelines_from_runs, missing) if missing else {}
        out = []
        for (entry_id, fields), name in zip(entries, names, strict=True):
            job_id = fields.get("job_id", "")
            out.append(
                {
                    "entry_id": entry_id,
                    "job_id": job_id,
                    "pipeline": name or stored.get(job_id),
                    "status": fields.get("status", "dead"),
                    "error": (fields.get("error") or "")[:500],
                    "at": fields.get("at"),
                    "ms": _id_ms(entry_id),
                }
            )
        await self.redis.set(self.cursor_key, entries[-1][0])
        return out

    def _pipelines_from_runs(self, job_ids: list[str]) -> dict[str, str]:
        table = _runs_table()
        if table is None:
            return {}
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(table.c.job_id, table.c.pipeline).where(table.c.job_id.in_(job_ids))
            )
            return {row.job_id: row.pipeline for row in rows if row.pipeline}

    async def _run_failed(
        self, spec: dict[str, Any], current: Alert | None, failures: list[dict[str, Any]]
    ) -> tuple[bool, str, dict[str, Any]]:
        pipeline = spec.get("pipeline")
        matching = [
            f
            for f in failures
            if (pipeline is None or f["pipeline"] == pipeline)
            and (not spec.get("only_dead") or f["status"] == "dead")
        ]
        details: dict[str, Any] = dict(current.details) if current else {"jobs": [], "count": 0}
        jobs: list[dict[str, Any]] = list(details.get("jobs", []))
        if matching:
            jobs = (jobs + matching)[-MAX_LISTED:]
            details["jobs"] = jobs
            details["count"] = int(details.get("count", 0)) + len(matching)
            details["last_failure_ms"] = max(f["ms"] for f in matching)
            last: dict[str, int] = {}
            for job in jobs:
                last[job["pipeline"] or "?"] = max(last.get(job["pipeline"] or "?", 0), job["ms"])
            details["pipelines"] = last
            newest = matching[-1]
            summary = (
                f"{details['count']} run(s) of {pipeline or 'any pipeline'} failed; last: "
                f"{newest['pipeline'] or '?'} job {newest['job_id']} {newest['status']}"
                + (f": {newest['error'][:200]}" if newest["error"] else "")
            )
            return True, summary, details
        if current is None:
            return False, "", details
        # Firing, nothing new: does it clear?
        reason = await self._run_failed_cleared(spec, details)
        if reason:
            return False, current.summary, {**details, "resolved_by": reason}
        return True, current.summary, details

    async def _run_failed_cleared(self, spec: dict[str, Any], details: dict[str, Any]) -> str:
        quiet = float(spec.get("quiet_seconds") or 0)
        last_ms = int(details.get("last_failure_ms", 0))
        if quiet and time.time() * 1000 - last_ms >= quiet * 1000:
            return f"no new failure for {quiet:g} s"
        jobs = details.get("jobs", [])
        if jobs:
            async with self.redis.pipeline(transaction=False) as pipe:
                for job in jobs:
                    pipe.xrange(self.queue.keys.dead, job["entry_id"], job["entry_id"])
                present = await pipe.execute()
            if not any(present):
                return "every failed job left the dead letter (retried or deleted)"
        pipelines = details.get("pipelines", {})
        if pipelines and "?" not in pipelines:
            succeeded = await asyncio.to_thread(self._succeeded_since, pipelines)
            if succeeded:
                return "a later run of each pipeline succeeded"
        return ""

    def _succeeded_since(self, pipelines: dict[str, int]) -> bool:
        table = _runs_table()
        if table is None:
            return False
        with self.engine.connect() as conn:
            for name, ms in pipelines.items():
                since = datetime.fromtimestamp(ms / 1000, UTC)
                found = conn.execute(
                    select(table.c.job_id)
                    .where(
                        and_(
                            table.c.pipeline == name,
                            table.c.status == "succeeded",
                            table.c.finished_at > since,
                        )
                    )
                    .limit(1)
                ).first()
                if found is None:
                    return False
        return True

    # -- failure_rate ------------------------------------------------------------------

    def _failure_rate(self, spec: dict[str, Any]) -> tuple[bool, str, dict[str, Any]] | None:
        table = _runs_table()
        if table is None:
            return None
        window = float(spec["window_seconds"])
        since = datetime.now(UTC) - timedelta(seconds=window)
        query = select(table.c.status, func.count()).where(
            table.c.finished_at >= since, table.c.status.in_(("succeeded", "failed", "dead"))
        )
        if spec.get("pipeline"):
            query = query.where(table.c.pipeline == spec["pipeline"])
        with self.engine.connect() as conn:
            counts: dict[str, int] = {
                str(k): int(v) for k, v in conn.execute(query.group_by(table.c.status)).all()
            }
        total = sum(int(v) for v in counts.values())
        failed = int(counts.get("failed", 0)) + int(counts.get("dead", 0))
        rate = failed / total if total else 0.0
        details = {
            "window_seconds": window,
            "runs": total,
            "failed": failed,
            "failure_rate": round(rate, 4),
            "threshold": spec["threshold"],
            "min_runs": spec["min_runs"],
        }
        active = total >= int(spec["min_runs"]) and rate > float(spec["threshold"])
        summary = (
            f"{failed} of {total} runs of {spec.get('pipeline') or 'all pipelines'} failed in the "
            f"last {window:g} s ({rate:.0%} > {float(spec['threshold']):.0%})"
        )
        return active, summary, details

    # -- backlog -----------------------------------------------------------------------

    async def _oldest_waiting(self, pools: list[str]) -> float | None:
        """Seconds the oldest waiting (undelivered) job of ``pools`` has waited."""
        now_ms = int(time.time() * 1000)
        oldest: int | None = None
        for pool in pools:
            for priority in PRIORITIES:
                key = self.queue.keys.stream(pool, priority)
                try:
                    groups = await self.redis.xinfo_groups(key)
                except Exception:  # no such stream
                    continue
                group = next((g for g in groups if str(g.get("name")) == GROUP), None)
                last = str(group.get("last-delivered-id", "0-0")) if group else "0-0"
                first = await self.redis.xrange(key, f"({last}", "+", count=1)
                if first:
                    ms = _id_ms(str(first[0][0]))
                    oldest = ms if oldest is None else min(oldest, ms)
        return None if oldest is None else max(0.0, (now_ms - oldest) / 1000)

    async def _backlog(self, spec: dict[str, Any], status: Any) -> tuple[bool, str, dict[str, Any]]:
        pool = spec.get("queue")
        length = int(status.by_queue.get(pool, 0)) if pool else int(status.queue_length)
        pools = [pool] if pool else sorted(status.by_queue)
        age = await self._oldest_waiting(pools) if spec.get("max_age_seconds") else None
        reasons = []
        if spec.get("max_length") is not None and length > int(spec["max_length"]):
            reasons.append(f"{length} jobs waiting (> {spec['max_length']})")
        if age is not None and age > float(spec["max_age_seconds"]):
            reasons.append(f"oldest waiting {age:.0f} s (> {float(spec['max_age_seconds']):g} s)")
        details = {"queue": pool, "length": length, "oldest_waiting_s": age}
        summary = f"backlog in {pool or 'all pools'}: " + "; ".join(reasons)
        return bool(reasons), summary, details

    # -- worker_lost -------------------------------------------------------------------

    async def _lost_workers(self) -> dict[str, dict[str, Any]]:
        import json

        keys = self.queue.keys
        ids = cast(list[str], await self.redis.zrange(keys.workers, 0, -1))
        async with self.redis.pipeline(transaction=False) as pipe:
            for worker_id in ids:
                pipe.hget(keys.worker(worker_id), "current_jobs")
            raws = await pipe.execute()
        alive: dict[str, list[str]] = {}
        for worker_id, raw in zip(ids, raws, strict=True):
            if raw is not None:
                try:
                    alive[worker_id] = list(json.loads(raw))
                except ValueError:
                    alive[worker_id] = []
        registered = set(ids)
        for worker_id, jobs in self.seen_workers.items():
            if worker_id in alive or not jobs or worker_id in self.lost_workers:
                continue
            orphaned = await self._orphaned(worker_id, jobs)
            if worker_id in registered or orphaned:
                logger.warning(
                    "alerting: worker %s lost while holding %d job(s)", worker_id, len(jobs)
                )
                self.lost_workers[worker_id] = jobs
        self.seen_workers = alive
        out: dict[str, dict[str, Any]] = {}
        for worker_id, jobs in list(self.lost_workers.items()):
            orphaned = await self._orphaned(worker_id, jobs)
            if orphaned or worker_id not in out:
                out[worker_id] = {"jobs": jobs, "still_running_under_it": orphaned}
            if not orphaned:
                # Reported this tick (the incident opens or stays), forgotten next tick.
                del self.lost_workers[worker_id]
        return out

    async def _orphaned(self, worker_id: str, jobs: list[str]) -> list[str]:
        records = await self.queue.get_many(jobs)
        return [
            r.job_id
            for r in records
            if r is not None and r.status == "running" and r.worker_id == worker_id
        ]

    # -- schedule_missed ---------------------------------------------------------------

    def _schedule_missed(
        self, spec: dict[str, Any], current: Alert | None
    ) -> tuple[bool, str, dict[str, Any]] | None:
        """Schedules (not paused) whose next tick (``next_tick_ms``) is more than
        ``grace_seconds`` in the past (no scheduler fired it: Redis down, servers stalled),
        or whose last tick could not be enqueued (``last_error``: the pipeline is gone or
        invalid)."""
        table = _schedules_table()
        if table is None or "next_tick_ms" not in table.c:
            return None
        columns = table.c
        grace = float(spec.get("grace_seconds") or 60)
        cutoff = int((time.time() - grace) * 1000)
        query = select(columns.id, columns.name, columns.next_tick_ms, columns.last_error).where(
            or_(
                and_(columns.next_tick_ms.is_not(None), columns.next_tick_ms < cutoff),
                columns.last_error.is_not(None),
            ),
            columns.paused.is_(False),
        )
        if spec.get("schedule_id"):
            query = query.where(columns.id == spec["schedule_id"])
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(columns.id).limit(50)).all()
        missed: dict[str, dict[str, Any]] = {}
        for row in rows:
            entry: dict[str, Any] = {"name": row.name}
            if row.next_tick_ms is not None and row.next_tick_ms < cutoff:
                entry["overdue_since"] = datetime.fromtimestamp(
                    int(row.next_tick_ms) / 1000, UTC
                ).isoformat()
            if row.last_error:
                entry["error"] = str(row.last_error)[:500]
            missed[str(row.id)] = entry
        if missed:
            names = ", ".join(sorted(str(v["name"]) for v in missed.values()))
            summary = f"schedule tick missed: {names}"
            first = next(iter(missed.values()))
            if first.get("error"):
                summary += f" ({first['error'][:200]})"
            return True, summary, {"schedules": missed}
        previous = current.details if current else {}
        return (
            False,
            current.summary if current else "",
            {
                **previous,
                "resolved_by": "every schedule's ticks fire again",
            },
        )

    # -- firing and resolving ----------------------------------------------------------

    async def _fire(self, rule: Rule, summary: str, details: dict[str, Any]) -> None:
        channels = rule.spec.get("channels", [])
        notify = "sent"
        if not channels:
            notify = "none"
        else:
            last = await asyncio.to_thread(self.store.last_notified, rule.id)
            cooldown = float(rule.spec.get("cooldown_seconds", 0))
            if last is not None and time.time() - last < cooldown:
                notify = "suppressed"
        alert = await asyncio.to_thread(self.store.open_alert, rule, summary, details, notify)
        if alert is None:
            return
        logger.warning("alert %s FIRING (%s): %s", alert.id, rule.name, summary)
        if notify == "sent":
            self._notify(alert, "firing", channels)

    async def _resolve(self, alert: Alert, details: dict[str, Any], rule: Rule | None) -> None:
        resolved = await asyncio.to_thread(self.store.resolve, alert.id, details)
        if resolved is None:
            return
        logger.info("alert %s resolved (%s)", alert.id, alert.rule_name)
        if resolved.notify != "sent":
            return
        if rule is None:
            found = await asyncio.to_thread(self.store.get_rule, alert.rule_id)
            if found is None:
                return
            rule = found
        self._notify(resolved, "resolved", rule.spec.get("channels", []))

    async def _resume(self) -> None:
        """On taking the lease: finish the deliveries a previous leader left unfinished
        (it stopped while retrying), with the attempts it had left. A delivery that
        succeeded, or used all its attempts, is not sent again."""
        try:
            recent = await asyncio.to_thread(self.store.list, None, None, RESUME_SCAN)
        except Exception as exc:
            logger.warning("alerting: cannot read alerts to resume deliveries: %s", exc)
            return
        horizon = datetime.now(UTC) - timedelta(seconds=RESUME_WITHIN)
        for alert in recent:
            if alert.notify != "sent" or alert.started_at < horizon:
                continue
            rule = await asyncio.to_thread(self.store.get_rule, alert.rule_id)
            if rule is None:
                continue
            events = ["firing"] + (["resolved"] if alert.state == "resolved" else [])
            for event in events:
                for channel in rule.spec.get("channels", []):
                    made = [
                        n
                        for n in alert.notifications
                        if n.get("event") == event
                        and n.get("channel") == channel.get("type")
                        and n.get("target") == channel_target(channel)
                    ]
                    if any(n.get("ok") for n in made) or len(made) >= ATTEMPTS:
                        continue
                    logger.info(
                        "alert %s: resuming the %s notification to %s (%d attempt(s) made)",
                        alert.id,
                        event,
                        channel.get("type"),
                        len(made),
                    )
                    self._notify(alert, event, [channel], made=len(made))

    def _notify(
        self,
        alert: Alert,
        event: str,
        channels: list[dict[str, Any]],
        made: int = 0,
    ) -> None:
        payload = alert.model_dump(mode="json", exclude={"notifications"})
        for channel in channels:
            task = asyncio.create_task(self._deliver(alert.id, channel, event, payload, made))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _deliver(
        self,
        alert_id: str,
        channel: dict[str, Any],
        event: str,
        payload: dict[str, Any],
        made: int = 0,
    ) -> None:
        async def record(attempt: dict[str, Any]) -> None:
            try:
                async with self._record_lock:
                    await asyncio.to_thread(self.store.record_attempts, alert_id, [attempt])
            except Exception as exc:
                logger.warning("alert %s: cannot record a notification attempt: %s", alert_id, exc)

        await deliver(
            channel,
            event,
            payload,
            self.settings,
            attempts=ATTEMPTS - made,
            on_attempt=record,
            made=made,
        )


async def start(app: Any) -> list[asyncio.Task[None]]:
    """Start this server's evaluator (it evaluates while it holds the lease)."""
    evaluator = Evaluator(app.state.settings, app.state.redis, app.state.db)
    app.state.alerting = evaluator
    return [asyncio.create_task(evaluator.run(), name="alerting")]
