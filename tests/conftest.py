"""Fixtures shared by every test package."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import RedisServer, free_port
from tests.pg import PostgresCluster, create_database, drop_database

# Qt tests run offscreen; set before any Qt import.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh MIMIR_DATA_DIR for the test."""
    path = tmp_path / "data"
    path.mkdir()
    monkeypatch.setenv("MIMIR_DATA_DIR", str(path))
    return path


@pytest.fixture
def pipelines_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh MIMIR_PIPELINES_DIR for the test."""
    path = tmp_path / "pipelines"
    path.mkdir()
    monkeypatch.setenv("MIMIR_PIPELINES_DIR", str(path))
    return path


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A real redis-server on a free port, stopped after the test."""
    server = RedisServer(port=free_port(), directory=tmp_path / "redis").start()
    try:
        yield server
    finally:
        server.stop(kill=True)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL cluster for the session (tests/pg.py); fails without one."""
    try:
        cluster = PostgresCluster.start()
    except RuntimeError as exc:  # missing or broken PostgreSQL: a failure, never a skip
        pytest.fail(f"no PostgreSQL for the tests: {exc}", pytrace=False)
    try:
        yield cluster.url
    finally:
        cluster.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty run store database: a new SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'runstore.db'}"
        return
    url = create_database(request.getfixturevalue("postgres_url"))
    try:
        yield url
    finally:
        drop_database(url)
