"""Fixtures shared by every test package."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import RedisServer, free_port

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
