"""Backups of a running cluster and restores into a new or stopped one, for every backend.

A **backup** is taken by the cluster's own server (``POST /api/v1/admin/backups``): it
holds the ontology store and the run store and reaches Redis, so every part is consistent
while jobs keep flowing. This module asks for it, follows its progress and downloads the
archive.

A **restore** never touches a running cluster's stores. It goes:

1. verify the whole archive into a staging directory (checksums, versions, schemas that
   this Mimir can read): a damaged or foreign archive is refused naming the part, and the
   target is untouched;
2. a target that has data is refused without ``force``; with it, the target is first
   backed up (``pre-restore-…``) and taken down;
3. the parts are written beside the target's files and swapped in (the run store, the
   ontology store rebuilt from N-Quads, twins, pipelines, files, Redis's snapshot turned
   into the append-only file the cluster's Redis loads);
4. the cluster starts without workers, the server migrates older schemas forward, and
   ``POST /api/v1/admin/restore/reconcile`` settles the jobs that were running when the
   backup was taken (queued again, or finished when their run was already stored), then
   the workers start.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mimir.app.cluster.base import ClusterBackend, ClusterError, ClusterStatus, Progress
from mimir.app.services.api import ApiClient, ApiError
from mimir.core.backup.archive import read_manifest, verify_archive
from mimir.core.backup.manifest import BackupError, Manifest

__all__ = [
    "BackupRefused",
    "BackupResult",
    "default_backup_dir",
    "human_size",
    "list_backups",
    "restore_cluster",
    "take_backup",
]

logger = logging.getLogger(__name__)

#: Seconds between two looks at a running backup task.
_POLL = 0.25


class BackupRefused(ClusterError):
    """The archive or the target was refused before anything changed (exit code 2)."""

    def __init__(self, message: str, part: str | None = None) -> None:
        super().__init__(message)
        self.part = part


@dataclass(frozen=True)
class BackupResult:
    path: Path
    manifest: Manifest


def _no_progress(step: str, message: str) -> None:
    logger.info("%s: %s", step, message)


def default_backup_dir(backend: ClusterBackend) -> Path:
    """Where the CLI and the console keep archives unless told otherwise."""
    settings = getattr(backend, "settings", None)
    if settings is not None and getattr(settings, "backup_dir_explicit", False):
        return Path(settings.backup_dir)
    state_dir = Path(settings.state_dir) if settings is not None else Path.home()
    return state_dir / "backups"


def _token(backend: ClusterBackend) -> str | None:
    token = getattr(backend, "api_token", None)
    if token:
        return str(token)
    settings = getattr(backend, "settings", None)
    return getattr(settings, "api_token", None) or None


async def _api(backend: ClusterBackend, status: ClusterStatus | None = None) -> ApiClient:
    status = status or await backend.status()
    if not status.running or not status.api_url:
        raise ClusterError(
            f"cluster {backend.project!r} is not running: its server takes the backup, "
            "start it first ('mimir cluster up')"
        )
    return await asyncio.to_thread(ApiClient, status.api_url, _token(backend), timeout=30.0)


def human_size(value: int) -> str:
    """``4.6 KiB``, ``47.7 MiB``."""
    if value < 1024 * 1024:
        return f"{value / 1024:.1f} KiB"
    return f"{value / 1024 / 1024:.1f} MiB"


async def take_backup(
    backend: ClusterBackend,
    to: Path | None = None,
    *,
    include_secrets: bool = False,
    passphrase: str | None = None,
    progress: Progress | None = None,
    name_prefix: str = "",
) -> BackupResult:
    """Have the running cluster's server take a backup, and download it to ``to`` (a file,
    or a directory: :func:`default_backup_dir` when ``None``)."""
    report = progress or _no_progress
    if include_secrets and not passphrase:
        raise BackupRefused(
            "--include-secrets needs a passphrase: secrets are never written in clear"
        )
    api = await _api(backend)
    try:
        body: dict[str, Any] = {"include_secrets": include_secrets, "passphrase": passphrase}
        try:
            started = await api.request("POST", "/api/v1/admin/backups", json=body)
        except ApiError as exc:
            raise ClusterError(f"the server refused the backup: {exc}") from exc
        task_id, name = started["id"], started["name"]
        report("backup", f"the server is taking backup {name}")
        task = await _follow(api, task_id, report)
        target = _target_path(to, backend, name_prefix + name)
        report("download", f"downloading {name}")
        await _download(api, f"/api/v1/admin/backups/{name}", target)
        with contextlib.suppress(ApiError):
            await api.request("DELETE", f"/api/v1/admin/backups/{name}")
    finally:
        await api.aclose()
    manifest = Manifest.model_validate(task["manifest"])
    if manifest.encrypted:
        sidecar = target.with_name(target.name + ".meta.json")
        await asyncio.to_thread(sidecar.write_text, manifest.model_dump_json(indent=2))
    size = (await asyncio.to_thread(target.stat)).st_size
    report("backup", f"wrote {target} ({human_size(size)})")
    return BackupResult(target, manifest)


def _target_path(to: Path | None, backend: ClusterBackend, name: str) -> Path:
    if to is None:
        to = default_backup_dir(backend)
    if to.is_dir() or str(to).endswith("/") or to.suffix == "":
        to.mkdir(parents=True, exist_ok=True)
        return to / name
    to.parent.mkdir(parents=True, exist_ok=True)
    return to


async def _follow(api: ApiClient, task_id: str, report: Progress) -> dict[str, Any]:
    last = ""
    while True:
        task: dict[str, Any] = await api.request("GET", f"/api/v1/admin/backups/tasks/{task_id}")
        state = task.get("state")
        if state == "failed":
            raise ClusterError(f"the backup failed: {task.get('error') or 'no reason given'}")
        if state == "succeeded":
            return task
        done, total = int(task.get("bytes_done") or 0), int(task.get("bytes_total") or 0)
        line = str(task.get("step") or "")
        if total:
            line += f" {min(100, done * 100 // total)}%"
        if line != last:
            report("backup", line)
            last = line
        await asyncio.sleep(_POLL)


async def _download(api: ApiClient, path: str, target: Path) -> None:
    partial = target.with_name(target.name + ".partial")
    handle = await asyncio.to_thread(partial.open, "wb")
    try:
        async for chunk in api.stream_bytes(path):
            await asyncio.to_thread(handle.write, chunk)
        await asyncio.to_thread(handle.flush)
    except BaseException:
        handle.close()
        partial.unlink(missing_ok=True)
        raise
    handle.close()
    await asyncio.to_thread(partial.replace, target)


# ---------------------------------------------------------------- the server's archives


async def server_backups(backend: ClusterBackend) -> list[dict[str, Any]] | None:
    """The archives the running cluster's server keeps (its scheduled backups, in
    ``MIMIR_BACKUP_DIR``), newest first; ``None`` when the cluster does not run."""
    status = await backend.status()
    if not status.running or not status.api_url:
        return None
    api = await _api(backend, status)
    try:
        answer = await api.request("GET", "/api/v1/admin/backups")
    finally:
        await api.aclose()
    return list(answer.get("backups", []))


async def fetch_backup(
    backend: ClusterBackend, name: str, to: Path | None = None, progress: Progress | None = None
) -> Path:
    """Download the archive ``name`` the running cluster's server keeps, to ``to`` (a file or
    a directory; :func:`default_backup_dir` when ``None``); it stays on the server."""
    report = progress or _no_progress
    api = await _api(backend)
    try:
        target = _target_path(to, backend, name)
        report("download", f"downloading {name}")
        await _download(api, f"/api/v1/admin/backups/{name}", target)
    except ApiError as exc:
        raise ClusterError(f"cannot download {name}: {exc}") from exc
    finally:
        await api.aclose()
    report("download", f"wrote {target} ({human_size(target.stat().st_size)})")
    return target


# ---------------------------------------------------------------- listing


@dataclass(frozen=True)
class BackupEntry:
    path: Path
    size: int
    manifest: Manifest | None
    error: str = ""


def list_backups(directory: Path) -> list[BackupEntry]:
    """The archives in ``directory``, newest first (blocking: call in a thread)."""
    entries: list[BackupEntry] = []
    if not directory.is_dir():
        return entries
    for path in directory.iterdir():
        if not path.is_file() or not (path.name.endswith(".tar.gz") or path.name.endswith(".age")):
            continue
        try:
            entries.append(BackupEntry(path, path.stat().st_size, read_manifest(path)))
        except (BackupError, OSError) as exc:
            entries.append(BackupEntry(path, path.stat().st_size, None, str(exc)))
    entries.sort(
        key=lambda e: (e.manifest.taken_at if e.manifest else "", e.path.name), reverse=True
    )
    return entries


# ---------------------------------------------------------------- restore


async def restore_cluster(
    backend: ClusterBackend,
    archive: Path,
    *,
    force: bool = False,
    passphrase: str | None = None,
    workers: int | None = None,
    progress: Progress | None = None,
    checker: Callable[[Manifest], None] | None = None,
) -> ClusterStatus:
    """Restore ``archive`` into ``backend``'s cluster (see the module's docstring)."""
    report = progress or _no_progress
    target = _restore_target(backend)
    staging = target.staging_root() / f"restore-{uuid.uuid4().hex[:12]}"
    report("verify", f"verifying {archive.name}")

    def check(manifest: Manifest) -> None:
        target.check_compatible(manifest)
        if checker is not None:
            checker(manifest)

    def on_bytes(done: int, total: int) -> None:
        report("verify", f"{min(100, done * 100 // max(total, 1))}%")

    try:
        manifest = await asyncio.to_thread(
            verify_archive, archive, staging, passphrase=passphrase, check=check, progress=on_bytes
        )
    except BackupError as exc:
        raise BackupRefused(str(exc), exc.part) from exc
    try:
        report("verify", f"archive of {manifest.project!r} taken {manifest.taken_at} is intact")
        has_data = await target.describe_data()
        if has_data and not force:
            raise BackupRefused(
                f"cluster {backend.project!r} has data ({has_data}): --force replaces it "
                "and first backs it up"
            )
        if has_data:
            report("restore", f"backing up what cluster {backend.project!r} holds first")
            await _pre_restore_backup(backend, report)
        status = await backend.status()
        if status.running:
            report("restore", f"taking cluster {backend.project!r} down")
            await backend.down(report)
        await target.apply(staging, manifest, report)
    finally:
        await asyncio.to_thread(shutil.rmtree, staging, True)
    report("restore", "starting the cluster without workers")
    status = await backend.up(0, report)
    api = await _api(backend, status)
    try:
        settled = await api.request(
            "POST",
            "/api/v1/admin/restore/reconcile",
            json={"redis_snapshot_at": manifest.redis_snapshot_at},
            timeout=120.0,
        )
    finally:
        await api.aclose()
    report(
        "reconcile",
        f"{settled.get('requeued', 0)} job(s) queued again, {settled.get('finalised', 0)} "
        f"already finished, {settled.get('schedules_rewound', 0)} schedule tick(s) to fire again",
    )
    for trigger in settled.get("triggers_needing_secret", []) or []:
        report(
            "reconcile", f"trigger {trigger} needs a new secret (secrets were not in the archive)"
        )
    count = workers if workers is not None else int(manifest.counts.get("workers", 2) or 2)
    return await backend.scale(count, report)


async def _pre_restore_backup(backend: ClusterBackend, report: Progress) -> None:
    status = await backend.status()
    started = False
    if not status.running:
        report("restore", "starting it without workers to take the backup")
        await backend.up(0, report)
        started = True
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    try:
        result = await take_backup(
            backend, None, progress=report, name_prefix=f"pre-restore-{stamp}-"
        )
    finally:
        if started:
            await backend.down(report)
    report("restore", f"what was replaced is in {result.path}")


class _RestoreTarget:
    """Where a backend's files live, and how parts are written there."""

    def staging_root(self) -> Path:
        raise NotImplementedError

    def check_compatible(self, manifest: Manifest) -> None:
        raise NotImplementedError

    async def describe_data(self) -> str:
        raise NotImplementedError

    async def apply(self, staging: Path, manifest: Manifest, report: Progress) -> None:
        raise NotImplementedError


def _restore_target(backend: ClusterBackend) -> _RestoreTarget:
    if backend.backend == "local":
        from mimir.app.cluster.restore_local import LocalRestoreTarget

        return LocalRestoreTarget(backend)  # type: ignore[arg-type]
    if backend.backend == "docker":
        from mimir.app.cluster.restore_docker import DockerRestoreTarget

        return DockerRestoreTarget(backend)  # type: ignore[arg-type]
    raise ClusterError(
        f"restore is not available for the {backend.backend} backend yet: restore into a "
        "local or Docker cluster (--backend local|docker)"
    )
