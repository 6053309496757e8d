"""Backups taken by the server, while it serves: the task behind ``POST /api/v1/admin/backups``.

The server holds the ontology store and the run store and reaches Redis, so it is the one
process that can snapshot all of them consistently without stopping anything. A backup is
a task of this process (:class:`BackupService`), its blocking work in threads, never on
the event loop. One runs at a time across every server of the cluster: a Redis lease
(``{prefix}backup:lock``, ``SET NX PX``, renewed while the task runs) refuses a second
(409).

The task writes the parts into ``<data_dir>/.backup-staging/<id>/`` (stale ones, older
than an hour, are removed first), in this order:

1. ``redis/dump.rdb``: Redis first, fetched over the replication protocol;
2. the run store: ``runstore/mimir.db`` (SQLite online backup) or ``runstore/pg.dump``
   (``pg_dump``); without ``include_secrets`` the trigger secrets are redacted (SQLite:
   in the copy; PostgreSQL: the ``triggers`` table's rows are left out of the dump and
   ``runstore/triggers.json`` holds them with their secrets redacted);
3. ``ontologies/dataset.nq`` and ``ontologies/catalog.sqlite3`` (skipped with
   ``FUSEKI_URL``: the external store is backed up by its own means);
4. ``twins/twins.sqlite3``;
5. ``pipelines/<path>``: every regular file of the pipelines directory;
6. ``files/<path>``: the other files of the data directory (not the stores above, the
   staging area, the backups, symbolic links).

Nothing fences the queue between steps: a job that ends after the Redis snapshot is
settled at restore by ``JobQueue.reconcile_after_restore`` (its run is in the run store),
so nothing is lost or run twice. Then the manifest is filled and
:func:`mimir.core.backup.archive.write_archive` writes ``<backup_dir>/<name>``.

The passphrase lives only in the task's closure: never logged, stored or answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import shutil
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from sqlalchemy import Engine

from mimir.core.backup import stores
from mimir.core.backup.archive import archive_name, read_manifest, write_archive
from mimir.core.backup.manifest import BackupError, Manifest, iso_utc
from mimir.core.backup.redis_rdb import fetch_rdb, redact_url
from mimir.core.ontology.store import open_ontology_store
from mimir.core.ontology.triplestores import OxigraphStore
from mimir.core.queue import JobQueue
from mimir.core.queue.client import redis_errors
from mimir.core.runstore.db import SQLITE_NAME, make_engine, redact_database_url
from mimir.core.settings import Settings
from mimir.server.lease import RedisLease

__all__ = [
    "ARCHIVE_NAME_PATTERN",
    "BackupBusyError",
    "BackupService",
    "BackupTask",
    "archive_path",
    "list_archives",
]

logger = logging.getLogger(__name__)

#: Names :func:`archive_name` gives (the only names the download and delete routes take).
ARCHIVE_NAME_PATTERN = (
    r"^mimir-(?:[A-Za-z0-9_][A-Za-z0-9._-]{0,127}-)?\d{8}T\d{6}Z\.tar\.gz(?:\.age)?$"
)
_ARCHIVE_NAME = re.compile(ARCHIVE_NAME_PATTERN)
#: Staging directories under the data directory, one per task.
STAGING_DIR = ".backup-staging"
#: A staging directory (or a ``.partial`` archive) older than this is a dead task's.
STALE_AFTER = 3600.0
#: The Redis lease: its life, and how often the running task renews it.
LEASE_MS = 60_000
RENEW_EVERY = 15.0
#: Finished tasks remembered for ``GET .../tasks/{id}``.
MAX_TASKS = 50
#: What an archive never holds (the manifest's ``excluded``).
ALWAYS_EXCLUDED = ("logs", "images", "worker-side files in Docker (worker_data)")


class BackupBusyError(Exception):
    """Another backup runs (on this server or another one of the cluster)."""


@dataclass
class BackupTask:
    """A backup being taken, or taken (what ``GET .../tasks/{id}`` answers)."""

    id: str
    name: str
    state: str = "running"  # running | succeeded | failed
    step: str = "starting"
    bytes_done: int = 0
    bytes_total: int = 0
    error: str | None = None
    manifest: dict[str, Any] | None = None
    started_at: str = field(default_factory=lambda: iso_utc(datetime.now(UTC)))
    finished_at: str | None = None


def project_of(settings: Settings) -> str:
    """The project an archive is named after: the cluster's (``MIMIR_PROJECT``), else the
    key prefix unless it is the default; a Redis Cluster's hash tag braces dropped
    (``{mimir}:`` is the default, ``{app}:`` names ``app``)."""
    if settings.project:
        return settings.project
    prefix = settings.key_prefix.replace("{", "").replace("}", "").rstrip(":")
    return "" if prefix in {"", "mimir"} else prefix


def archive_path(settings: Settings, name: str) -> Path | None:
    """The archive ``name`` in the backup directory, or ``None`` if ``name`` is not one
    :func:`archive_name` makes (no other file of that directory is ever served)."""
    if not _ARCHIVE_NAME.fullmatch(name):
        return None
    folder = settings.backups_path.expanduser().resolve()
    path = folder / name
    if path.parent != folder or path.is_symlink():
        return None
    return path


def list_archives(settings: Settings) -> list[dict[str, Any]]:
    """The archives of the backup directory, newest first (blocking)."""
    folder = settings.backups_path.expanduser()
    found: list[dict[str, Any]] = []
    if not folder.is_dir():
        return found
    for path in folder.iterdir():
        if not _ARCHIVE_NAME.fullmatch(path.name) or path.is_symlink() or not path.is_file():
            continue
        entry: dict[str, Any] = {
            "name": path.name,
            "size": path.stat().st_size,
            "encrypted": path.name.endswith(".age"),
            "taken_at": None,
            "counts": {},
            "includes_secrets": False,
            "mimir_version": None,
            "error": None,
        }
        try:
            manifest = read_manifest(path)
        except (BackupError, OSError) as exc:
            entry["error"] = str(exc)
        else:
            entry.update(
                taken_at=manifest.taken_at,
                counts=manifest.counts,
                encrypted=manifest.encrypted or entry["encrypted"],
                includes_secrets=manifest.includes_secrets,
                mimir_version=manifest.mimir_version,
            )
        found.append(entry)
    found.sort(key=lambda e: (e["taken_at"] or "", e["name"]), reverse=True)
    return found


# -- the snapshot (blocking; each step runs in a thread) --------------------------------


class _Snapshot:
    """The blocking steps of one backup, writing into ``staging``."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        staging: Path,
        task: BackupTask,
        include_secrets: bool,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.staging = staging
        self.task = task
        self.include_secrets = include_secrets
        self.counts: dict[str, int] = {}
        self.schemas: dict[str, Any] = {}
        self.excluded: list[str] = list(ALWAYS_EXCLUDED)
        self.descriptions: dict[str, str] = {}
        self.redis_snapshot_at = 0.0

    def redis(self) -> None:
        def progress(done: int) -> None:
            self.task.bytes_done = done

        info = fetch_rdb(
            self.settings.redis_url, self.staging / "redis" / "dump.rdb", progress=progress
        )
        self.redis_snapshot_at = info.taken_at
        self.schemas["queue"] = {
            "redis_version": info.redis_version,
            "rdb_version": info.rdb_version,
        }

    def runstore(self) -> None:
        parsed = self.engine.url
        url = parsed.render_as_string(hide_password=False)
        if parsed.get_backend_name() == "sqlite":
            if not parsed.database or parsed.database == ":memory:":
                raise BackupError("the run store is an in-memory SQLite database")
            source = Path(parsed.database)
            copy = self.staging / "runstore" / SQLITE_NAME
            stores.sqlite_copy(source, copy)
            if not self.include_secrets:
                stores.redact_triggers_sqlite(copy)
            # Counted and versioned from the copy: what the archive holds.
            engine = make_engine(f"sqlite:///{copy}")
            try:
                self.counts.update(stores.runstore_counts(engine))
                self.schemas["runstore"] = stores.runstore_schema(engine)
            finally:
                engine.dispose()
            return
        dump = self.staging / "runstore" / "pg.dump"
        if self.include_secrets:
            stores.pg_dump(url, dump)
        else:
            stores.pg_dump(url, dump, exclude_table_data=["triggers"])
            rows = stores.trigger_rows_redacted(self.engine)
            target = self.staging / "runstore" / "triggers.json"
            target.write_text(json.dumps(rows, indent=1, default=str) + "\n", encoding="utf-8")
            self.descriptions["runstore/triggers.json"] = (
                "the run store's webhook triggers, secrets redacted (pg.dump holds the "
                "triggers table without its rows: restore inserts these)"
            )
        self.counts.update(stores.runstore_counts(self.engine))
        self.schemas["runstore"] = stores.runstore_schema(self.engine)

    def ontologies(self) -> None:
        if self.settings.fuseki_url:
            self.excluded.append("ontologies (kept in the external SPARQL store, FUSEKI_URL)")
            return
        store = open_ontology_store(self.settings)
        if not isinstance(store.triples, OxigraphStore):
            self.excluded.append("ontologies (not in a built-in Oxigraph store)")
            return
        folder = self.staging / "ontologies"
        quads = stores.dump_oxigraph(store.triples, folder / "dataset.nq")
        stores.sqlite_copy(store.catalog.path, folder / "catalog.sqlite3")
        self.counts["quads"] = quads
        self.counts["ontologies"] = stores.sqlite_count(folder / "catalog.sqlite3", "ontologies")
        self.schemas["oxigraph"] = {"quads": quads}

    def twins(self) -> None:
        source = self.settings.data_dir.expanduser() / "twins.sqlite3"
        if not source.is_file():
            self.counts["twins"] = 0
            return
        copy = self.staging / "twins" / "twins.sqlite3"
        stores.sqlite_copy(source, copy)
        self.counts["twins"] = stores.twins_count(copy)
        self.schemas["twins"] = {"user_version": stores.twins_user_version(copy)}

    def pipelines(self) -> None:
        root = self.settings.pipelines_dir.expanduser()
        count = 0
        for relative, path in _regular_files(root, skip=()):
            _copy(path, self.staging / "pipelines" / relative)
            if path.suffix in {".yaml", ".yml"}:
                count += 1
        self.counts["pipelines"] = count

    def config(self) -> None:
        """The server's settings as the backup saw them, secrets left out (the API token,
        the database and SMTP URLs' passwords, Redis's): a record for whoever rebuilds the
        cluster; a restore does not apply it."""
        values: dict[str, Any] = {}
        for item in fields(self.settings):
            if item.repr:  # the secret fields are the ones kept out of repr()
                values[item.name] = getattr(self.settings, item.name)
        values["redis_url"] = redact_url(self.settings.redis_url)
        if self.settings.fuseki_url:
            values["fuseki_url"] = redact_url(self.settings.fuseki_url)
        if self.settings.database_url:
            values["database_url"] = redact_database_url(self.settings.database_url)
        if self.settings.smtp_url:
            values["smtp_url"] = redact_url(self.settings.smtp_url)
        target = self.staging / "config" / "settings.json"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(values, indent=2, sort_keys=True, default=_plain) + "\n")
        self.descriptions["config/settings.json"] = "the server's settings, without secrets"

    def files(self, backups: Path) -> None:
        root = self.settings.data_dir.expanduser()
        skip = [root / STAGING_DIR, root / "ontologies", backups, self.settings.pipelines_dir]
        if self.settings.log_dir is not None:
            skip.append(self.settings.log_dir)
        # The stores' own files (and their -wal, -shm, -journal), copied above.
        stores_files = [root / SQLITE_NAME, root / "twins.sqlite3"]
        parsed = self.engine.url
        if parsed.get_backend_name() == "sqlite" and parsed.database:
            stores_files.append(Path(parsed.database))
        taken = {str(path.expanduser().resolve()) for path in stores_files}
        count = 0
        for relative, path in _regular_files(root, skip=tuple(skip)):
            resolved = str(path.resolve())
            if any(resolved == t or resolved.startswith(t + "-") for t in taken):
                continue
            _copy(path, self.staging / "files" / relative)
            count += 1
        self.counts["files"] = count


def _plain(value: Any) -> Any:
    """JSON for what settings hold besides str/int/bool: paths, limits, tuples."""
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    if isinstance(value, (Path, set, frozenset)):
        return str(value) if isinstance(value, Path) else sorted(value)
    return str(value)


def _regular_files(root: Path, skip: tuple[Path, ...]) -> Iterator[tuple[str, Path]]:
    """``(relative posix path, path)`` of every regular file under ``root``, sorted; no
    symbolic link is followed or taken; the folders of ``skip`` are left out."""
    if not root.is_dir():
        return
    skipped = {path.expanduser().resolve() for path in skip}
    stack = [root]
    found: list[tuple[str, Path]] = []
    while stack:
        folder = stack.pop()
        try:
            entries = list(folder.iterdir())
        except OSError as exc:
            logger.warning("backup: cannot list %s: %s", folder, exc)
            continue
        for entry in entries:
            if entry.is_symlink():
                continue
            if entry.is_dir():
                if entry.resolve() not in skipped:
                    stack.append(entry)
            elif entry.is_file():
                found.append((entry.relative_to(root).as_posix(), entry))
    yield from sorted(found)


def _copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        shutil.copyfile(source, target, follow_symlinks=False)
    except FileNotFoundError:  # removed meanwhile: not part of this backup
        target.unlink(missing_ok=True)


def _private_dir(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    with contextlib.suppress(OSError):
        folder.chmod(0o700)


def _remove_stale(folder: Path, older_than: float, pattern: str = "*") -> None:
    if not folder.is_dir():
        return
    limit = time.time() - older_than
    for path in folder.glob(pattern):
        with contextlib.suppress(OSError):
            if path.lstat().st_mtime < limit:
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)


# -- the service --------------------------------------------------------------------------


def lock_key(settings: Settings) -> str:
    """The Redis lease held while a backup runs. The snapshot is taken under it, so a
    restored queue holds it too: the restore's reconcile removes it."""
    return f"{settings.key_prefix}backup:lock"


class BackupService:
    """The backups of one server process: at most one running, the last few remembered."""

    def __init__(self, settings: Settings, redis: Redis, engine: Engine) -> None:
        self.settings = settings
        self.redis = redis
        self.engine = engine
        self.tasks: OrderedDict[str, BackupTask] = OrderedDict()
        self._running: asyncio.Task[None] | None = None
        self._lock_key = lock_key(settings)

    def task(self, task_id: str) -> BackupTask | None:
        return self.tasks.get(task_id)

    async def start(self, *, include_secrets: bool, passphrase: str | None) -> BackupTask:
        """Start a backup; :class:`BackupBusyError` while one runs anywhere in the cluster."""
        if self._running is not None and not self._running.done():
            raise BackupBusyError("a backup is already being taken by this server")
        lease = RedisLease(self.redis, self._lock_key, uuid.uuid4().hex, LEASE_MS)
        async with redis_errors("take the backup lock"):
            taken = await lease.take()
        if not taken:
            raise BackupBusyError("a backup is already being taken (by this or another server)")
        try:
            backups = self.settings.backups_path.expanduser()
            name = await asyncio.to_thread(self._free_name, backups, passphrase is not None)
            task = BackupTask(id=uuid.uuid4().hex[:16], name=name)
            self.tasks[task.id] = task
            while len(self.tasks) > MAX_TASKS:
                self.tasks.popitem(last=False)
            self._running = asyncio.create_task(
                self._run(task, lease, include_secrets, passphrase), name=f"backup-{task.id}"
            )
        except BaseException:
            with contextlib.suppress(Exception):
                await lease.release()
            raise
        logger.info(
            "backup %s started: %s (%s)",
            task.id,
            task.name,
            "with secrets, encrypted"
            if include_secrets
            else ("encrypted" if passphrase is not None else "no secrets"),
        )
        return task

    def _free_name(self, backups: Path, encrypted: bool) -> str:
        when = datetime.now(UTC)
        project = project_of(self.settings)
        while True:
            name = archive_name(project, when, encrypted)
            if not (backups / name).exists() and not (backups / (name + ".partial")).exists():
                return name
            when += timedelta(seconds=1)

    async def _renew(self, lease: RedisLease) -> None:
        while True:
            await asyncio.sleep(RENEW_EVERY)
            try:
                kept = await lease.renew()
            except Exception as exc:
                logger.warning("backup: cannot renew the backup lock: %s", exc)
                continue
            if not kept:
                logger.warning("backup: the backup lock expired; another backup may start")

    async def _run(
        self, task: BackupTask, lease: RedisLease, include_secrets: bool, passphrase: str | None
    ) -> None:
        renewer = asyncio.create_task(self._renew(lease))
        started = time.monotonic()
        data_dir = self.settings.data_dir.expanduser()
        staging = data_dir / STAGING_DIR / task.id
        backups = self.settings.backups_path.expanduser()
        snapshot = _Snapshot(self.settings, self.engine, staging, task, include_secrets)

        async def step(name: str, call: Callable[..., Any], *args: Any) -> Any:
            task.step = name
            task.bytes_done = task.bytes_total = 0
            return await asyncio.to_thread(call, *args)

        # Published only once the lock is released: whoever sees the backup end may start
        # the next one at once (a client that did got 409 under load).
        state: str = "failed"
        error: str | None = "cancelled"
        try:
            await asyncio.to_thread(_remove_stale, data_dir / STAGING_DIR, STALE_AFTER)
            await asyncio.to_thread(_remove_stale, backups, STALE_AFTER, "*.partial")
            # Only the server's user reads what is staged or archived.
            await asyncio.to_thread(_private_dir, staging)
            await asyncio.to_thread(backups.mkdir, 0o700, True, True)
            # The queue's figures as near the Redis snapshot as can be.
            queue = JobQueue(self.redis, self.settings.key_prefix, self.settings.job_ttl)
            with contextlib.suppress(Exception):  # figures only: the snapshot decides
                status = await queue.status()
                snapshot.counts["jobs_queued"] = status.queue_length + status.scheduled
                snapshot.counts["jobs_running"] = status.running
                # How many workers a restore starts unless told otherwise.
                snapshot.counts["workers"] = status.workers
            await step("redis", snapshot.redis)
            await step("runstore", snapshot.runstore)
            await step("ontologies", snapshot.ontologies)
            await step("twins", snapshot.twins)
            await step("pipelines", snapshot.pipelines)
            await step("files", snapshot.files, backups)
            await step("config", snapshot.config)
            if not include_secrets:
                snapshot.excluded.append("secrets")
            manifest = Manifest(
                taken_at=iso_utc(datetime.now(UTC)),
                duration_s=round(time.monotonic() - started, 3),
                project=project_of(self.settings),
                key_prefix=self.settings.key_prefix,
                includes_secrets=include_secrets,
                redis_snapshot_at=snapshot.redis_snapshot_at,
                schemas=snapshot.schemas,
                counts=snapshot.counts,
                excluded=snapshot.excluded,
            )

            def progress(done: int, total: int) -> None:
                task.bytes_done, task.bytes_total = done, total

            task.step = "archive"
            done = await asyncio.to_thread(
                write_archive,
                staging,
                backups / task.name,
                manifest,
                passphrase=passphrase,
                descriptions=snapshot.descriptions,
                progress=progress,
            )
            done = done.model_copy(update={"duration_s": round(time.monotonic() - started, 3)})
            task.manifest = done.model_dump(mode="json")
            task.bytes_done = task.bytes_total = done.total_size
            task.step = "done"
            state, error = "succeeded", None
            logger.info(
                "backup %s succeeded: %s (%d parts, %.1f s)",
                task.id,
                task.name,
                len(done.parts),
                time.monotonic() - started,
            )
        except BackupError as exc:
            error = str(exc)
            logger.warning("backup %s failed at %s: %s", task.id, task.step, exc)
        except Exception as exc:
            error = f"{task.step}: {exc}"
            logger.exception("backup %s failed at %s", task.id, task.step)
        finally:
            try:
                renewer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await renewer
                await asyncio.to_thread(shutil.rmtree, staging, True)
                try:
                    await lease.release()
                except Exception as exc:
                    logger.warning("backup: cannot release the backup lock: %s", exc)
            finally:
                task.finished_at = iso_utc(datetime.now(UTC))
                task.state, task.error = state, error
