"""The run store's fixtures: a migrated engine on SQLite and on PostgreSQL alike."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from mimir.core.runstore.db import make_engine, migrate
from mimir.core.runstore.runs import RunStore


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """An engine on a fresh database, migrated to the newest schema."""
    engine = make_engine(database_url)
    migrate(engine)
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def store(engine: Engine) -> RunStore:
    return RunStore(engine)
