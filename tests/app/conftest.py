"""Fixtures for the console's tests: a real Mimir stack (redis-server, server, worker)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import RedisServer, ServerProcess, WorkerProcess, free_port

SLEEP_PIPELINE = """\
name: nap
description: sleeps a little
steps:
  - name: nap
    plugin: Debug.sleep
    config: {seconds: 0.01}
    output: napped
"""


def stack_env(tmp_path: Path, redis_url: str, **extra: str) -> dict[str, str]:
    """A clean environment for the stack's children: fresh dirs, no token."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIMIR_") and k != "REDIS_URL"}
    for name in ("data", "pipelines", "state"):
        (tmp_path / name).mkdir(exist_ok=True)
    env.update(
        MIMIR_DATA_DIR=str(tmp_path / "data"),
        MIMIR_PIPELINES_DIR=str(tmp_path / "pipelines"),
        MIMIR_STATE_DIR=str(tmp_path / "state"),
        REDIS_URL=redis_url,
        MIMIR_LOG_LEVEL="INFO",
        **extra,
    )
    return env


@dataclass
class Stack:
    redis: RedisServer
    server: ServerProcess
    worker: WorkerProcess
    env: dict[str, str]

    @property
    def url(self) -> str:
        return self.server.base_url


@pytest.fixture
def stack(tmp_path: Path, redis_server: RedisServer) -> Iterator[Stack]:
    """redis-server + ``mimir server`` + one ``mimir worker``, all real processes."""
    env = stack_env(tmp_path, redis_server.url)
    (tmp_path / "pipelines" / "nap.yaml").write_text(SLEEP_PIPELINE)
    server = ServerProcess(free_port(), env).start(wait_for_redis=True)
    worker = WorkerProcess(env, concurrency=8)
    try:
        worker.start()
        yield Stack(redis_server, server, worker, env)
    finally:
        worker.stop()
        server.stop()


@pytest.fixture
def loop(qapp: Any) -> Iterator[Any]:
    """A qasync loop on the test's QApplication (``qapp``, pytest-qt's), closed afterwards."""
    import qasync

    event_loop = qasync.QEventLoop(qapp, already_running=False)
    asyncio.set_event_loop(event_loop)
    try:
        yield event_loop
    finally:
        event_loop.close()
        asyncio.set_event_loop(None)
