"""API keys with roles, kept in the run store's database (table ``api_keys``).

A key reads ``mk_<id>_<secret>``: ``id`` is 12 hex characters (the row's primary key, so
a request looks up one row and verifies one hash), ``secret`` 43 URL-safe characters
(32 random bytes). Only a hash of the whole key is stored: ``hashlib.scrypt`` (OpenSSL's,
in the standard library: no extra dependency to keep up) with a random 16-byte salt,
``n=2**14, r=8, p=1`` (16 MiB of memory per verification). The plain key is returned
once, by :meth:`KeyStore.create`, and never stored nor logged.

Roles are ordered: ``viewer`` < ``operator`` < ``admin``; see :mod:`mimir.server.roles`.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import re
import secrets
from datetime import UTC, datetime
from typing import Any, Literal, cast

from pydantic import BaseModel
from sqlalchemy import (
    Column,
    DateTime,
    Engine,
    String,
    Table,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from mimir.core.runstore.db import metadata

__all__ = [
    "KEY_PREFIX",
    "NAME_PATTERN",
    "ApiKey",
    "KeyExistsError",
    "KeyStore",
    "Role",
    "RoleName",
    "api_keys",
    "hash_key",
    "parse_key",
    "verify_key",
]

KEY_PREFIX = "mk_"
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
_KEY = re.compile(r"^mk_([0-9a-f]{12})_([A-Za-z0-9_-]{20,200})$")
#: scrypt's cost: 2**14 rounds of 8 blocks, 16 MiB, ~40 ms on one core here.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1


class Role(enum.IntEnum):
    """What a key may do; each role may do what the roles below it may."""

    viewer = 1
    operator = 2
    admin = 3


api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(12), primary_key=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("role", String(16), nullable=False),
    #: ``scrypt$n$r$p$salt$hash`` (base64): never the key itself.
    Column("hash", String(200), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("last_used_at", DateTime(timezone=True), nullable=True),
)


RoleName = Literal["viewer", "operator", "admin"]


class ApiKey(BaseModel):
    id: str
    name: str
    role: RoleName
    created_at: datetime
    last_used_at: datetime | None = None


class KeyExistsError(ValueError):
    """A key of that name exists already."""


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def hash_key(key: str) -> str:
    """The stored form of ``key`` (salted scrypt)."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(
        key.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, maxmem=64 * 2**20
    )
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def verify_key(key: str, stored: str) -> bool:
    """True when ``key`` hashes to ``stored`` (constant-time comparison)."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        given = hashlib.scrypt(
            key.encode(),
            salt=base64.b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            maxmem=64 * 2**20,
            dklen=len(expected),
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(given, expected)


def parse_key(text: str) -> str | None:
    """The id of a key that has the key's form, else ``None``."""
    match = _KEY.match(text)
    return match.group(1) if match else None


def _utc(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _model(row: Any) -> ApiKey:
    return ApiKey(
        id=row.id,
        name=row.name,
        role=row.role,
        created_at=_utc(row.created_at) or datetime.now(UTC),
        last_used_at=_utc(row.last_used_at),
    )


class KeyStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def create(self, name: str, role: Role) -> tuple[ApiKey, str]:
        """A new key: its record and the plain key (shown once, stored only hashed)."""
        if not re.match(NAME_PATTERN, name):
            raise ValueError(f"name {name!r}: letters, digits, '.', '_', '-' (64 at most)")
        key_id = secrets.token_hex(6)
        key = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
        created = datetime.now(UTC)
        row = {
            "id": key_id,
            "name": name,
            "role": role.name,
            "hash": hash_key(key),
            "created_at": created,
            "last_used_at": None,
        }
        try:
            with self.engine.begin() as conn:
                if conn.execute(select(api_keys.c.id).where(api_keys.c.name == name)).first():
                    raise KeyExistsError(f"a key named {name!r} exists")
                conn.execute(insert(api_keys), [row])
        except IntegrityError:
            raise KeyExistsError(f"a key named {name!r} exists") from None
        record = ApiKey(id=key_id, name=name, role=cast(RoleName, role.name), created_at=created)
        return record, key

    def list(self) -> list[ApiKey]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(api_keys).order_by(api_keys.c.name)).all()
        return [_model(r) for r in rows]

    def count(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(api_keys)).scalar_one())

    def lookup(self, key_id: str) -> tuple[ApiKey, str] | None:
        """The key of that id and its stored hash."""
        with self.engine.connect() as conn:
            row = conn.execute(select(api_keys).where(api_keys.c.id == key_id)).first()
        return (_model(row), row.hash) if row else None

    def revoke(self, name_or_id: str) -> ApiKey | None:
        """Delete the key of that name or id; its record, or ``None`` when none was."""
        where = or_(api_keys.c.name == name_or_id, api_keys.c.id == name_or_id)
        with self.engine.begin() as conn:
            row = conn.execute(select(api_keys).where(where)).first()
            if row is None:
                return None
            conn.execute(delete(api_keys).where(api_keys.c.id == row.id))
        return _model(row)

    def touch(self, key_id: str, at: datetime) -> None:
        """Note a use (callers write at most once a minute per key)."""
        with self.engine.begin() as conn:
            conn.execute(update(api_keys).where(api_keys.c.id == key_id).values(last_used_at=at))
