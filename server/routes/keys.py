"""API keys (admin only, see :mod:`mimir.server.roles`):

- ``GET /api/v1/keys``: every key by name, role, creation and last use (never a secret);
- ``POST /api/v1/keys`` ``{"name": ..., "role": "viewer|operator|admin"}``: 201 with the
  new key in ``key``, shown this once (409 when the name is taken);
- ``DELETE /api/v1/keys/{key_id}`` (an id or a name): 204; the key is refused at once on
  this server, within :data:`mimir.server.auth.KEY_CACHE_SECONDS` on others.

Creations and revocations are in the audit log (``keys.create``, ``keys.delete``, with the
key's id and name).
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Request, Response, status
from pydantic import BaseModel, Field

from mimir.core.runstore.keys import NAME_PATTERN, ApiKey, KeyExistsError, KeyStore, Role, RoleName
from mimir.server.deps import DbDep

__all__ = ["KeyCreate", "NewKey", "router"]

router = APIRouter(prefix="/api/v1/keys", tags=["keys"])


class KeyCreate(BaseModel):
    name: str = Field(pattern=NAME_PATTERN, max_length=64)
    role: RoleName = Field(description="viewer, operator or admin")


class NewKey(ApiKey):
    #: The key: ``Authorization: Bearer <key>``. Shown this once, never again.
    key: str


def _audit_target(request: Request, key_id: str, name: str) -> None:
    """The key's id and name in this call's audit entry (see server/runs/audit.py)."""
    target = request.scope.get("mimir.audit_target")
    if isinstance(target, dict):
        target.update(key_id=key_id, name=name)


def _forget(request: Request, key_id: str | None) -> None:
    cache = getattr(request.app.state, "key_cache", None)
    if cache is not None:
        cache.forget(key_id)


@router.get("", response_model=list[ApiKey])
async def list_keys(db: DbDep) -> list[ApiKey]:
    """Every API key (name, role, created, last use), by name."""
    return await asyncio.to_thread(KeyStore(db).list)


@router.post("", response_model=NewKey, status_code=status.HTTP_201_CREATED)
async def create_key(body: KeyCreate, request: Request, db: DbDep) -> NewKey:
    """A new API key with a role; the answer holds the key, shown this once."""
    try:
        record, key = await asyncio.to_thread(KeyStore(db).create, body.name, Role[body.role])
    except KeyExistsError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    except ValueError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None
    _audit_target(request, record.id, record.name)
    _forget(request, None)
    return NewKey(**record.model_dump(), key=key)


@router.delete("/{key_id}", status_code=status.HTTP_204_NO_CONTENT)
async def revoke_key(
    key_id: Annotated[str, Path(max_length=64, description="the key's id or name")],
    request: Request,
    db: DbDep,
) -> Response:
    """Revoke a key (by id or name): refused from now on."""
    record = await asyncio.to_thread(KeyStore(db).revoke, key_id)
    if record is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no API key {key_id!r}")
    _audit_target(request, record.id, record.name)
    _forget(request, record.id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
