"""The API key store on SQLite and PostgreSQL: hashed, unique names, last use, revoke."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, select

from mimir.core.runstore.keys import (
    KeyExistsError,
    KeyStore,
    Role,
    api_keys,
    parse_key,
    verify_key,
)


def test_keys_are_stored_hashed_and_revocable(engine: Engine) -> None:
    keys = KeyStore(engine)
    assert keys.count() == 0
    record, key = keys.create("ci", Role.operator)
    assert parse_key(key) == record.id and record.role == "operator"
    with pytest.raises(KeyExistsError):
        keys.create("ci", Role.viewer)
    with pytest.raises(ValueError):
        keys.create("bad name", Role.viewer)
    found = keys.lookup(record.id)
    assert found is not None
    listed, stored = found
    assert listed.name == "ci" and listed.last_used_at is None
    assert stored.startswith("scrypt$") and key not in stored
    other = key[:-1] + ("B" if key[-1] != "B" else "C")  # one character off
    assert verify_key(key, stored) and not verify_key(other, stored)
    with engine.connect() as conn:
        assert key not in repr(conn.execute(select(api_keys)).all())
    used = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    keys.touch(record.id, used)
    assert [k.last_used_at for k in keys.list()] == [used]
    assert keys.revoke("nope") is None
    assert keys.revoke("ci") is not None  # by name (by id works the same)
    assert keys.lookup(record.id) is None and keys.count() == 0
