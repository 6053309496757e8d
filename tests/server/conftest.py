"""Fixtures for the API tests: a real ``mimir server`` process over HTTP."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers import RedisServer, ServerProcess, free_port

RESOURCES = Path(__file__).resolve().parents[2] / "resources"


def copy_examples(pipelines_dir: Path, data_dir: Path) -> None:
    """The shipped example pipelines and their sample data, as a user would have them."""
    for source, target in (
        (RESOURCES / "pipelines", pipelines_dir),
        (RESOURCES / "data", data_dir),
    ):
        if source.is_dir():
            shutil.copytree(source, target, dirs_exist_ok=True)


def server_env(
    *, data_dir: Path, pipelines_dir: Path, state_dir: Path, redis_url: str | None, **extra: str
) -> dict[str, str]:
    """A clean environment for a server child: our dirs, no token unless given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIMIR_") and k != "REDIS_URL"}
    env.update(
        MIMIR_DATA_DIR=str(data_dir),
        MIMIR_PIPELINES_DIR=str(pipelines_dir),
        MIMIR_STATE_DIR=str(state_dir),
        MIMIR_LOG_LEVEL="INFO",
    )
    if redis_url:
        env["REDIS_URL"] = redis_url
    env.update(extra)
    return env


@pytest.fixture
def make_server(
    tmp_path: Path, data_dir: Path, pipelines_dir: Path
) -> Iterator[Callable[..., ServerProcess]]:
    """Build (not start) server processes on fresh ports over this test's directories."""
    servers: list[ServerProcess] = []
    copy_examples(pipelines_dir, data_dir)

    def make(
        *,
        redis_url: str | None = None,
        args: list[str] | None = None,
        memory_limit: int | None = None,
        **env: str,
    ) -> ServerProcess:
        server = ServerProcess(
            free_port(),
            server_env(
                data_dir=data_dir,
                pipelines_dir=pipelines_dir,
                state_dir=tmp_path / "state",
                redis_url=redis_url,
                **env,
            ),
            args,
            log_path=tmp_path / f"server-{len(servers)}.log",
            memory_limit=memory_limit,
        )
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def api_server(
    make_server: Callable[..., ServerProcess], redis_server: RedisServer
) -> ServerProcess:
    """A running server with the test's Redis and fresh data and pipelines directories
    (holding the shipped examples)."""
    return make_server(redis_url=redis_server.url).start()


@pytest.fixture
def api_client(api_server: ServerProcess) -> Iterator[httpx.Client]:
    """An HTTP client bound to :func:`api_server`."""
    with httpx.Client(base_url=api_server.base_url, timeout=30.0) as client:
        yield client
