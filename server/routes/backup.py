"""Backups of the cluster's data, taken by this server (see :mod:`mimir.server.backup`).

- ``POST /api/v1/admin/backups`` ``{"include_secrets": false, "passphrase": null}`` — 202
  ``{"id", "name"}``: the backup runs as a task; 409 while another one runs anywhere in
  the cluster; 422 for secrets without a passphrase (never written in clear) or a
  passphrase under 8 characters. A passphrase encrypts the archive (``.tar.gz.age``).
- ``GET /api/v1/admin/backups/tasks/{id}`` — the task: ``state`` (running, succeeded,
  failed), ``step``, bytes done of the step, the archive's name, the error, the manifest.
- ``GET /api/v1/admin/backups`` — the archives in the backup directory
  (``MIMIR_BACKUP_DIR``), newest first, with what their manifests say.
- ``GET /api/v1/admin/backups/{name}`` — download one; ``DELETE`` removes it (and the
  clear manifest beside an encrypted one). Only names the server gives archives are
  taken (422 for any other, 404 for one that is not there).
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Request, status
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from redis.asyncio import Redis
from sqlalchemy import Engine

from mimir.core.backup.archive import remove_archive
from mimir.core.settings import Settings
from mimir.server.backup import (
    ARCHIVE_NAME_PATTERN,
    BackupBusyError,
    BackupService,
    BackupTask,
    archive_path,
    list_archives,
)
from mimir.server.deps import DbDep, RedisDep, SettingsDep

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/admin/backups", tags=["backups"])

#: Shortest passphrase accepted.
MIN_PASSPHRASE = 8


class BackupRequest(BaseModel):
    """What to back up. Secrets (trigger secrets) go only into an encrypted archive."""

    model_config = ConfigDict(extra="forbid")

    include_secrets: bool = Field(
        default=False,
        strict=True,
        description="Keep the webhook triggers' secrets (needs a passphrase: never in clear).",
    )
    passphrase: SecretStr | None = Field(
        default=None,
        min_length=MIN_PASSPHRASE,
        max_length=1024,
        description="Encrypt the archive (age, scrypt) with this passphrase.",
    )

    @model_validator(mode="after")
    def _secrets_need_a_passphrase(self) -> BackupRequest:
        if self.include_secrets and self.passphrase is None:
            raise ValueError(
                "include_secrets needs a passphrase: secrets are never written in clear"
            )
        return self


class BackupStarted(BaseModel):
    #: The task to follow (``GET /api/v1/admin/backups/tasks/{id}``).
    id: str
    #: The archive's file name once written.
    name: str


class BackupTaskOut(BaseModel):
    id: str
    state: str = Field(description="`running`, `succeeded` or `failed`.")
    step: str = Field(
        description="starting, redis, runstore, ontologies, twins, pipelines, files, archive, done."
    )
    bytes_done: int
    bytes_total: int
    name: str
    error: str | None = None
    manifest: dict[str, Any] | None = Field(
        default=None, description="The archive's manifest, once it is written."
    )
    started_at: str
    finished_at: str | None = None


class BackupEntry(BaseModel):
    name: str
    size: int
    taken_at: str | None = None
    encrypted: bool
    includes_secrets: bool = False
    mimir_version: str | None = None
    counts: dict[str, int] = Field(default_factory=dict)
    #: Why the manifest could not be read (a damaged archive), else null.
    error: str | None = None


class BackupList(BaseModel):
    backups: list[BackupEntry]


NameP = Annotated[
    str,
    Path(
        pattern=ARCHIVE_NAME_PATTERN,
        max_length=200,
        description="An archive's name, as the server gave it "
        "(`mimir-[<project>-]YYYYMMDDTHHMMSSZ.tar.gz[.age]`).",
    ),
]
TaskIdP = Annotated[str, Path(max_length=64, description="The id `POST` answered.")]


def _service(request: Request, redis: Redis, db: Engine, settings: Settings) -> BackupService:
    service: BackupService | None = getattr(request.app.state, "backups", None)
    if service is None or service.redis is not redis or service.engine is not db:
        service = BackupService(settings, redis, db)
        request.app.state.backups = service
    return service


def _refuse_while_written(request: Request, name: str) -> None:
    """409 while this server's task is still writing archive ``name`` (its name is known
    from the moment ``POST`` answers; the file is there once the task succeeds)."""
    service: BackupService | None = getattr(request.app.state, "backups", None)
    if service is None:
        return
    for task in service.tasks.values():
        if task.name == name and task.state == "running":
            raise HTTPException(
                status.HTTP_409_CONFLICT,
                f"backup {name!r} is still being written: follow its task {task.id!r}",
            )


def _task_out(task: BackupTask) -> BackupTaskOut:
    return BackupTaskOut(**task.__dict__)


@router.post("", status_code=status.HTTP_202_ACCEPTED, response_model=BackupStarted)
async def start_backup(
    request: Request,
    settings: SettingsDep,
    redis: RedisDep,
    db: DbDep,
    body: BackupRequest | None = None,
) -> BackupStarted:
    """Take a backup of every store while the cluster runs; follow it through its task."""
    body = body or BackupRequest()
    service = _service(request, redis, db, settings)
    passphrase = body.passphrase.get_secret_value() if body.passphrase is not None else None
    try:
        task = await service.start(include_secrets=body.include_secrets, passphrase=passphrase)
    except BackupBusyError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    return BackupStarted(id=task.id, name=task.name)


@router.get("/tasks/{task_id}", response_model=BackupTaskOut)
async def backup_task(request: Request, task_id: TaskIdP) -> BackupTaskOut:
    """A backup task of this server: its state, step and progress, then its manifest."""
    service: BackupService | None = getattr(request.app.state, "backups", None)
    task = service.task(task_id) if service is not None else None
    if task is None:
        raise HTTPException(404, f"no backup task {task_id!r} on this server")
    return _task_out(task)


@router.get("", response_model=BackupList)
async def list_backups(settings: SettingsDep) -> BackupList:
    """The archives in the backup directory, newest first."""
    entries = await asyncio.to_thread(list_archives, settings)
    return BackupList(backups=[BackupEntry.model_validate(entry) for entry in entries])


@router.get(
    "/{name}",
    response_class=FileResponse,
    responses={
        200: {
            "description": "The archive (tar + gzip, age-encrypted when its name ends `.age`).",
            "content": {"application/octet-stream": {"schema": {"type": "string"}}},
        }
    },
)
async def download_backup(request: Request, name: NameP, settings: SettingsDep) -> FileResponse:
    """Download one archive (409 while it is being written)."""
    _refuse_while_written(request, name)
    path = archive_path(settings, name)
    if path is None or not await asyncio.to_thread(path.is_file):
        raise HTTPException(404, f"no backup {name!r}")
    return FileResponse(path, media_type="application/octet-stream", filename=name)


@router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_backup(request: Request, name: NameP, settings: SettingsDep) -> None:
    """Remove one archive (and the clear manifest beside an encrypted one); 409 while it is
    being written."""
    _refuse_while_written(request, name)
    path = archive_path(settings, name)
    if path is None or not await asyncio.to_thread(path.is_file):
        raise HTTPException(404, f"no backup {name!r}")

    await asyncio.to_thread(remove_archive, path)
