"""A redis-server, a ``mimir server`` and optional workers as child processes, for the
benchmarks that measure through real processes (``redis_soak``, ``backup``).

Everything lives in one directory (``tmp``): Redis's files, the server's data, pipelines
and state, one log per process. Redis keeps nothing on disk (no RDB, no AOF): the
benchmarks measure the queue and the server, not Redis's persistence.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

__all__ = ["ServerProcesses", "free_port", "wait_for"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(condition: Callable[[], object], timeout: float, what: str) -> None:
    """Poll ``condition`` until it is truthy; RuntimeError naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


class ServerProcesses:
    """Start with :meth:`start`, stop with :meth:`stop` (SIGTERM, newest first, then kill
    after ``stop_timeout``). ``env`` adds settings for the server and the workers."""

    def __init__(
        self,
        tmp: Path,
        *,
        workers: int = 0,
        concurrency: int = 1,
        env: Mapping[str, str] | None = None,
        server_timeout: float = 60.0,
        stop_timeout: float = 30.0,
    ) -> None:
        self.tmp = tmp
        self.workers = workers
        self.concurrency = concurrency
        self.extra_env = dict(env or {})
        self.server_timeout = server_timeout
        self.stop_timeout = stop_timeout
        self.redis_port = free_port()
        self.api_port = free_port()
        self.children: list[subprocess.Popen[bytes]] = []

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def _spawn(self, command: list[str], env: dict[str, str], log: str) -> None:
        with (self.tmp / log).open("ab") as out:
            self.children.append(
                subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
            )

    def start(self) -> None:
        import httpx
        import redis

        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not on PATH")
        self._spawn(
            [binary, "--port", str(self.redis_port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.tmp)],
            dict(os.environ),
            "redis.log",
        )  # fmt: skip
        client = redis.Redis.from_url(self.redis_url)

        def redis_up() -> bool:
            try:
                return bool(client.ping())
            except redis.RedisError:
                return False

        try:
            wait_for(redis_up, 10, "redis-server")
            env = {k: v for k, v in os.environ.items() if not k.startswith("MIMIR_")}
            env.update(
                REDIS_URL=self.redis_url,
                MIMIR_DATA_DIR=str(self.tmp / "data"),
                MIMIR_PIPELINES_DIR=str(self.tmp / "pipelines"),
                MIMIR_STATE_DIR=str(self.tmp / "state"),
                MIMIR_LOG_LEVEL="WARNING",
            )
            env.update(self.extra_env)
            self._spawn(
                [sys.executable, "-m", "mimir.server", "--host", "127.0.0.1",
                 "--port", str(self.api_port)],
                env,
                "server.log",
            )  # fmt: skip

            def api_up() -> bool:
                try:
                    return httpx.get(f"{self.base_url}/health").status_code == 200
                except httpx.HTTPError:
                    return False

            wait_for(api_up, self.server_timeout, "the server")
            for n in range(self.workers):
                self._spawn(
                    [sys.executable, "-m", "mimir.worker", "--concurrency", str(self.concurrency)],
                    env,
                    f"worker-{n}.log",
                )
            prefix = env.get("MIMIR_KEY_PREFIX", "mimir:")
            wait_for(lambda: client.zcard(f"{prefix}workers") >= self.workers, 60, "the workers")
        finally:
            client.close()

    def stop(self) -> None:
        for child in reversed(self.children):
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in reversed(self.children):
            try:
                child.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(timeout=5)
