"""Restoring an archive into a local-process cluster's directories.

Every directory is built beside the one it replaces (``<dir>.restoring``) and swapped in
only when it is complete, so a restore that fails half-way leaves the old files, never a
mix. The cluster is down while this runs (:func:`mimir.app.cluster.backup.restore_cluster`).
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

from mimir.app.cluster.backup import _RestoreTarget
from mimir.app.cluster.base import ClusterError, Progress
from mimir.app.cluster.local import LocalBackend, _redis_binary
from mimir.core.backup.manifest import BackupError, Manifest
from mimir.core.backup.redis_rdb import max_rdb_version, rdb_to_aof
from mimir.core.backup.stores import insert_trigger_rows, load_nquads, pg_restore
from mimir.core.runstore.db import SQLITE_NAME, database_url, known_revisions
from mimir.core.settings import Settings
from mimir.core.twin.store import SCHEMA_VERSION as TWINS_SCHEMA

__all__ = ["LocalRestoreTarget", "build_trees", "check_schemas", "restore_postgres"]

#: Files of the data directory that come from their own parts, not from ``files/``.
_STORE_FILES = (SQLITE_NAME, "twins.sqlite3", "ontologies")


def check_schemas(manifest: Manifest, *, key_prefix: str, postgres: bool, rdb_max: int) -> None:
    """Refuse an archive whose parts this Mimir cannot load (before anything is written)."""
    runstore = manifest.schemas.get("runstore") or {}
    revision = runstore.get("alembic_revision")
    if revision and revision not in known_revisions():
        raise BackupError(
            f"the run store in this archive is at schema revision {revision!r}, which this "
            "Mimir does not know (a newer Mimir made it): upgrade Mimir first",
            "runstore",
        )
    engine = runstore.get("engine", "sqlite")
    if engine == "postgresql" and not postgres:
        raise BackupError(
            "the archive's run store is PostgreSQL (pg_dump): set MIMIR_DATABASE_URL to an "
            "empty PostgreSQL database to restore it",
            "runstore/pg.dump",
        )
    if engine == "sqlite" and postgres:
        raise BackupError(
            "the archive's run store is SQLite, but MIMIR_DATABASE_URL names PostgreSQL: "
            "unset it to restore into SQLite",
            "runstore/mimir.db",
        )
    twins = (manifest.schemas.get("twins") or {}).get("user_version")
    if twins is not None and int(twins) > TWINS_SCHEMA:
        raise BackupError(
            f"the twins store in this archive has schema version {twins}; this Mimir reads "
            f"up to {TWINS_SCHEMA}: upgrade Mimir first",
            "twins/twins.sqlite3",
        )
    rdb = (manifest.schemas.get("queue") or {}).get("rdb_version")
    if rdb is not None and int(rdb) > rdb_max:
        raise BackupError(
            f"the queue snapshot is RDB version {rdb}, newer than this host's redis-server "
            f"reads ({rdb_max}): install a newer Redis",
            "redis/dump.rdb",
        )
    if manifest.key_prefix != key_prefix:
        raise BackupError(
            f"the archive's queue uses the key prefix {manifest.key_prefix!r}, this cluster "
            f"{key_prefix!r}: set MIMIR_KEY_PREFIX={manifest.key_prefix} to restore it",
            "redis/dump.rdb",
        )


class LocalRestoreTarget(_RestoreTarget):
    def __init__(self, backend: LocalBackend) -> None:
        self.backend = backend
        self.settings = backend.settings

    def staging_root(self) -> Path:
        return Path(self.settings.state_dir) / "restore-staging"

    def _postgres(self) -> bool:
        return bool(self.settings.database_url)

    def check_compatible(self, manifest: Manifest) -> None:
        state = self.backend.load_state()
        if state is not None and not state.own_redis:
            raise BackupError(
                f"cluster {self.backend.project!r} uses an external Redis ({state.redis_url}): "
                "restore into a cluster that runs its own Redis"
            )
        check_schemas(
            manifest,
            key_prefix=self.settings.key_prefix,
            postgres=self._postgres(),
            rdb_max=max_rdb_version(_redis_binary()),
        )

    async def describe_data(self) -> str:
        return await asyncio.to_thread(self._describe_data)

    def _describe_data(self) -> str:
        found: list[str] = []
        data = self.backend.data_dir
        if (data / SQLITE_NAME).exists() and not self._postgres():
            found.append("a run store")
        if (data / "ontologies").exists():
            found.append("an ontology store")
        if (data / "twins.sqlite3").exists():
            found.append("twins")
        pipelines = self.backend.pipelines_dir
        if pipelines.is_dir() and any(p.is_file() for p in pipelines.rglob("*")):
            found.append(f"pipelines in {pipelines}")
        redis = self.backend.redis_dir
        if redis.is_dir() and any(redis.iterdir()):
            found.append("a queue")
        return ", ".join(found)

    async def apply(self, staging: Path, manifest: Manifest, report: Progress) -> None:
        try:
            await asyncio.to_thread(self._apply, staging, manifest, report)
        except BackupError as exc:
            raise ClusterError(f"restore failed: {exc}") from exc

    def _apply(self, staging: Path, manifest: Manifest, report: Progress) -> None:
        data = self.backend.data_dir
        new_data = _fresh(data.with_name(data.name + ".restoring"))
        pipelines = self.backend.pipelines_dir
        new_pipelines = _fresh(pipelines.with_name(pipelines.name + ".restoring"))
        build_trees(staging, manifest, report, new_data, new_pipelines)
        redis = self.backend.redis_dir
        new_redis = _fresh(redis.with_name(redis.name + ".restoring"))
        rdb = staging / "redis" / "dump.rdb"
        if rdb.exists():
            report("restore", "turning the queue snapshot into Redis's append-only file")
            shutil.copy2(rdb, new_redis / "dump.rdb")
            rdb_to_aof(_redis_binary(), new_redis)
        restore_postgres(staging, self.settings, report)
        report("restore", "swapping the restored files in")
        for old, new in ((data, new_data), (pipelines, new_pipelines), (redis, new_redis)):
            _swap(old, new)


def build_trees(
    staging: Path, manifest: Manifest, report: Progress, new_data: Path, new_pipelines: Path
) -> None:
    """Build the data directory (plain files, the SQLite run store, twins, the ontology
    store rebuilt from N-Quads) into ``new_data`` and the pipelines into ``new_pipelines``
    (both empty directories), from a verified archive in ``staging``. Blocking."""
    # Plain files first, then the stores over them (a files/ entry never shadows one).
    _copy_tree(staging / "files", new_data)
    for name in _STORE_FILES:
        leftover = new_data / name
        if leftover.is_dir():
            shutil.rmtree(leftover)
        elif leftover.exists():
            leftover.unlink()
    runstore = staging / "runstore"
    if (runstore / SQLITE_NAME).exists():
        shutil.copy2(runstore / SQLITE_NAME, new_data / SQLITE_NAME)
    if (staging / "twins" / "twins.sqlite3").exists():
        shutil.copy2(staging / "twins" / "twins.sqlite3", new_data / "twins.sqlite3")
    ontologies = staging / "ontologies"
    if (ontologies / "dataset.nq").exists():
        report("restore", "rebuilding the ontology store from N-Quads")
        (new_data / "ontologies").mkdir(parents=True, exist_ok=True)
        quads = load_nquads(ontologies / "dataset.nq", new_data / "ontologies" / "oxigraph")
        expected = manifest.counts.get("quads")
        if expected is not None and quads != expected:
            raise BackupError(
                f"the ontology store loaded {quads} quads, the archive says {expected}",
                "ontologies/dataset.nq",
            )
        if (ontologies / "catalog.sqlite3").exists():
            shutil.copy2(
                ontologies / "catalog.sqlite3", new_data / "ontologies" / "catalog.sqlite3"
            )
    _copy_tree(staging / "pipelines", new_pipelines)


def restore_postgres(staging: Path, settings: Settings, report: Progress) -> None:
    """``pg_restore`` the archive's PostgreSQL run store into ``settings``' database, with
    the triggers' rows (dumped apart), when the archive has one. Blocking."""
    runstore = staging / "runstore"
    if not (runstore / "pg.dump").exists():
        return
    report("restore", "restoring the run store into PostgreSQL (pg_restore)")
    url = database_url(settings)
    pg_restore(url, runstore / "pg.dump")
    if (runstore / "triggers.json").exists():
        rows = json.loads((runstore / "triggers.json").read_text())
        insert_trigger_rows(url, rows)


def _fresh(path: Path) -> Path:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def _copy_tree(source: Path, target: Path) -> None:
    if source.is_dir():
        shutil.copytree(source, target, dirs_exist_ok=True, symlinks=False)


def _swap(old: Path, new: Path) -> None:
    """Put ``new`` where ``old`` is; what ``old`` held was backed up before (``--force``)."""
    if old.exists():
        retired = old.with_name(old.name + ".replaced")
        if retired.exists():
            shutil.rmtree(retired)
        old.rename(retired)
        new.rename(old)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        old.parent.mkdir(parents=True, exist_ok=True)
        new.rename(old)
