"""Scheduled backups with retention, and the backup figures of ``GET /metrics``.

With ``MIMIR_BACKUP_SCHEDULE`` (cron in UTC, 5 fields or 6 with seconds first) the server
takes a backup at each tick, through the very path of ``POST /api/v1/admin/backups``:
the app's :class:`~mimir.server.backup.BackupService` (shared with the route) and its
Redis lock, so a manual and a scheduled backup never overlap; a tick that finds a backup
running (here or on another server) is skipped and logged. Only one server of the
cluster fires the ticks: the one holding the alert evaluator's Redis lease
(``{prefix}alerting:leader``, :mod:`.alerting`), the cluster's one leader; when it stops,
the next holder of the lease takes the ticks over. A tick due while no server ran is not
made up: the next one takes the backup.

Scheduled archives are encrypted with the first line of ``MIMIR_BACKUP_PASSPHRASE_FILE``
when it is set (read at each tick, never logged), and keep the secrets only with
``MIMIR_BACKUP_INCLUDE_SECRETS=1``. After each scheduled backup that succeeded,
:func:`mimir.core.backup.retention.prune` keeps the ``MIMIR_BACKUP_KEEP`` newest archives
of this project in the backup directory and none older than ``MIMIR_BACKUP_KEEP_DAYS``
(never the newest good one, never a ``pre-restore-…`` one, never a ``.partial`` file).

Every server records how its backups ended (manual and scheduled ones; skipped ticks too)
in the Redis hash ``{prefix}backup:stats``, which ``GET /metrics`` of any server reads:
``mimir_backups_total{outcome}`` (``succeeded``, ``failed``, ``skipped``) and
``mimir_backup_last_success_timestamp_seconds``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from croniter import croniter
from redis.asyncio import Redis

from mimir.core.backup.retention import ARCHIVE_PATTERN, prune
from mimir.core.settings import Settings
from mimir.server.backup import BackupBusyError, BackupService, BackupTask

__all__ = [
    "OUTCOMES",
    "BackupScheduler",
    "backup_service",
    "next_tick",
    "read_passphrase",
    "read_stats",
    "start",
    "stats_key",
]

logger = logging.getLogger(__name__)

#: Seconds between two looks at the clock and at this server's finished backups.
POLL = 0.5
#: How a backup ended, as ``mimir_backups_total`` counts it.
OUTCOMES = ("succeeded", "failed", "skipped")
#: Shortest passphrase (as ``POST /api/v1/admin/backups`` takes it).
MIN_PASSPHRASE = 8


def stats_key(settings: Settings) -> str:
    """The Redis hash of the backup figures: ``succeeded``, ``failed``, ``skipped``,
    ``last_success`` (Unix seconds)."""
    return f"{settings.key_prefix}backup:stats"


def next_tick(cron: str, after: datetime) -> datetime:
    """The first tick of ``cron`` (UTC) strictly after ``after``."""
    start = after.astimezone(UTC).replace(tzinfo=None)
    following: datetime = croniter(cron, start, second_at_beginning=True).get_next(datetime)
    return following.replace(tzinfo=UTC)


def read_passphrase(path: Path) -> str:
    """The first line of the passphrase file (blocking); ``ValueError`` when it is unusable."""
    try:
        text = path.expanduser().read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(
            f"cannot read MIMIR_BACKUP_PASSPHRASE_FILE {path}: {exc.strerror or exc}"
        ) from None
    lines = text.splitlines()
    passphrase = lines[0].strip() if lines else ""
    if len(passphrase) < MIN_PASSPHRASE:
        raise ValueError(
            f"the passphrase in MIMIR_BACKUP_PASSPHRASE_FILE {path} has fewer than "
            f"{MIN_PASSPHRASE} characters"
        )
    return passphrase


def backup_service(app: Any) -> BackupService:
    """The app's backup service, the one ``POST /api/v1/admin/backups`` uses (made here
    when no request made it yet, the way the route makes it)."""
    state = app.state
    service: BackupService | None = getattr(state, "backups", None)
    if service is None or service.redis is not state.redis or service.engine is not state.db:
        service = BackupService(state.settings, state.redis, state.db)
        state.backups = service
    return service


async def read_stats(redis: Redis, settings: Settings) -> dict[str, float]:
    """The backup figures of the cluster (what ``GET /metrics`` shows)."""
    raw: dict[Any, Any] = await redis.hgetall(stats_key(settings))
    stats: dict[str, float] = {}
    for key, value in raw.items():
        name = key.decode() if isinstance(key, bytes) else str(key)
        with contextlib.suppress(TypeError, ValueError):
            stats[name] = float(value)
    return stats


def _finished_epoch(task: BackupTask) -> float:
    if task.finished_at:
        with contextlib.suppress(ValueError):
            return datetime.fromisoformat(task.finished_at.replace("Z", "+00:00")).timestamp()
    return time.time()


class BackupScheduler:
    """Fires the scheduled backups (while this server leads), prunes after each one, and
    records how this server's backups ended."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.settings: Settings = app.state.settings
        self.redis: Redis = app.state.redis
        #: Ids of this server's finished tasks already recorded.
        self.recorded: set[str] = set()
        #: Ids of the tasks this scheduler started.
        self.scheduled: set[str] = set()
        self.next_at: datetime | None = None
        self._last_error = 0.0

    # -- the figures -------------------------------------------------------------------

    async def count(self, outcome: str, finished: float | None = None) -> None:
        key = stats_key(self.settings)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hincrby(key, outcome, 1)
            if outcome == "succeeded" and finished is not None:
                pipe.hset(key, "last_success", repr(finished))
            await pipe.execute()

    async def observe(self) -> None:
        """Record this server's backups that ended since the last look; prune after a
        scheduled one that succeeded."""
        service: BackupService | None = getattr(self.app.state, "backups", None)
        if service is None:
            return
        tasks = list(service.tasks.values())
        self.recorded &= {task.id for task in tasks}
        for task in tasks:
            if task.state == "running" or task.id in self.recorded:
                continue
            self.recorded.add(task.id)
            scheduled = task.id in self.scheduled
            self.scheduled.discard(task.id)
            await self.count(task.state, _finished_epoch(task))
            if not scheduled:
                continue
            if task.state != "succeeded":
                logger.warning("scheduled backup %s failed: %s", task.name, task.error)
                continue
            size = int((task.manifest or {}).get("total_size") or 0)
            logger.info(
                "scheduled backup %s succeeded (%.1f MiB of parts)", task.name, size / 2**20
            )
            await self.retain(task)

    async def retain(self, task: BackupTask) -> None:
        settings = self.settings
        if not settings.backup_keep and not settings.backup_keep_days:
            return
        match = ARCHIVE_PATTERN.fullmatch(task.name)
        project = (match.group("project") or "") if match else None
        try:
            deleted = await asyncio.to_thread(
                prune,
                settings.backups_path.expanduser(),
                settings.backup_keep,
                settings.backup_keep_days,
                project=project,
            )
        except Exception as exc:
            logger.warning("backup retention failed: %s", exc)
            return
        if deleted:
            logger.info(
                "backup retention (keep %d, %g days): deleted %s",
                settings.backup_keep,
                settings.backup_keep_days,
                ", ".join(path.name for path in deleted),
            )

    # -- the schedule ------------------------------------------------------------------

    def leads(self) -> bool:
        """Whether this server holds the cluster's leader lease (the alert evaluator's)."""
        evaluator = getattr(self.app.state, "alerting", None)
        return bool(getattr(evaluator, "leader", False))

    async def fire(self, tick: datetime) -> BackupTask | None:
        """Take the backup of ``tick`` (``None``: skipped or not started)."""
        settings = self.settings
        when = tick.isoformat().replace("+00:00", "Z")
        passphrase: str | None = None
        try:
            if settings.backup_passphrase_file is not None:
                passphrase = await asyncio.to_thread(
                    read_passphrase, settings.backup_passphrase_file
                )
            task = await backup_service(self.app).start(
                include_secrets=settings.backup_include_secrets, passphrase=passphrase
            )
        except BackupBusyError as exc:
            logger.info("scheduled backup of %s skipped: %s", when, exc)
            await self.count("skipped")
            return None
        except Exception as exc:
            logger.warning("scheduled backup of %s not started: %s", when, exc)
            await self.count("failed")
            return None
        self.scheduled.add(task.id)
        logger.info("scheduled backup of %s started: %s (task %s)", when, task.name, task.id)
        return task

    async def tick(self) -> None:
        """One look: fire a due tick (when leading), record what ended."""
        cron = self.settings.backup_schedule
        if cron is not None:
            now = datetime.now(UTC)
            if self.next_at is None:
                self.next_at = next_tick(cron, now)
            elif now >= self.next_at:
                due = self.next_at
                self.next_at = next_tick(cron, now)
                if self.leads():
                    await self.fire(due)
        await self.observe()

    def sleep_for(self) -> float:
        if self.next_at is None:
            return POLL
        until = (self.next_at - datetime.now(UTC)).total_seconds()
        return max(0.01, min(POLL, until + 0.001))

    async def run(self) -> None:
        if self.settings.backup_schedule:
            logger.info(
                "scheduled backups: %r (UTC) into %s, keep %s newest%s%s",
                self.settings.backup_schedule,
                self.settings.backups_path,
                self.settings.backup_keep or "all",
                f", {self.settings.backup_keep_days:g} days at most"
                if self.settings.backup_keep_days
                else "",
                ", encrypted" if self.settings.backup_passphrase_file else "",
            )
            if self.settings.backup_passphrase_file is not None:
                try:
                    await asyncio.to_thread(read_passphrase, self.settings.backup_passphrase_file)
                except ValueError as exc:
                    logger.error("scheduled backups will fail: %s", exc)
        while True:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if time.monotonic() - self._last_error > 60:
                    self._last_error = time.monotonic()
                    logger.warning("scheduled backups: %s: %s", type(exc).__name__, exc)
            await asyncio.sleep(self.sleep_for())


async def start(app: Any) -> list[asyncio.Task[None]]:
    """Start this server's backup scheduler (it also records how backups ended)."""
    scheduler = BackupScheduler(app)
    app.state.backup_scheduler = scheduler
    return [asyncio.create_task(scheduler.run(), name="backups")]
