"""Helpers shared by the tests: free ports, waiting on conditions, real redis-server."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(
    condition: Callable[[], T], timeout: float = 10.0, interval: float = 0.02, message: str = ""
) -> T:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: T = condition()
    while not last:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message or condition}")
        time.sleep(interval)
        last = condition()
    return last


async def async_wait_until(
    condition: Callable[[], Awaitable[T]],
    timeout: float = 10.0,
    interval: float = 0.02,
    message: str = "",
) -> T:
    """Async twin of :func:`wait_until`."""
    deadline = time.monotonic() + timeout
    last = await condition()
    while not last:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message or condition}")
        await asyncio.sleep(interval)
        last = await condition()
    return last


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """True when something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


@dataclass
class RedisServer:
    """A real redis-server child process on 127.0.0.1, AOF on, in its own directory."""

    port: int
    directory: Path
    process: subprocess.Popen[bytes] | None = None
    #: More redis-server arguments (``("--requirepass", "pw")``, ``("--unixsocket", path)``).
    extra_args: tuple[str, ...] = ()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not on PATH (apt-get install redis-server)")
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.directory),
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
                "--save",
                "",
                "--protected-mode",
                "yes",
                "--logfile",
                str(self.directory / "redis.log"),
                *self.extra_args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(lambda: port_open(self.port), timeout=10, message=f"redis on {self.port}")
        return self

    def stop(self, kill: bool = False) -> None:
        if self.process is None:
            return
        if kill:
            self.process.kill()
        else:
            self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()


class ServerProcess:
    """``python -m mimir.server`` as a child process on 127.0.0.1, for tests over HTTP.

    ``env`` is the child's whole environment (start from ``os.environ``). ``.start()``
    waits until ``/health`` answers (``wait_for_redis``: and says Redis is ok); if the
    process exits or the deadline passes first it raises with the process's last output.
    """

    def __init__(
        self,
        port: int,
        env: dict[str, str],
        args: list[str] | None = None,
        *,
        host: str = "127.0.0.1",
        log_path: Path | None = None,
        memory_limit: int | None = None,
    ) -> None:
        import os
        import tempfile

        self.port = port
        self.host = host
        #: Address-space cap (bytes) of the child, for tests of hostile input.
        self.memory_limit = memory_limit
        self.env = dict(env)
        self.args = list(args or [])
        if log_path is None:
            handle, name = tempfile.mkstemp(prefix="mimir-server-", suffix=".log")
            os.close(handle)
            log_path = Path(name)
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def command(self) -> list[str]:
        import sys

        return [
            sys.executable,
            "-m",
            "mimir.server",
            "--host",
            self.host,
            "--port",
            str(self.port),
            *self.args,
        ]

    def output(self, lines: int = 40) -> str:
        """The last ``lines`` lines the server printed (stdout and stderr)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def launch(self) -> ServerProcess:
        """Start the process without waiting for it."""
        limit = self.memory_limit

        def cap_memory() -> None:
            import resource

            if limit is not None:
                resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=cap_memory if limit is not None else None,
            )
        return self

    def start(self, timeout: float = 30.0, *, wait_for_redis: bool = False) -> ServerProcess:
        """Launch and wait until ``/health`` answers; raise with the output on failure."""
        import httpx

        self.launch()
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while True:
            code = self.process.poll()
            if code is not None:
                raise RuntimeError(
                    f"mimir server exited with code {code} before answering /health:\n"
                    f"{self.output()}"
                )
            try:
                answer = httpx.get(f"{self.base_url}/health", timeout=1.0)
                if answer.status_code == 200 and (
                    not wait_for_redis or answer.json().get("redis") == "ok"
                ):
                    return self
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"mimir server on port {self.port} not healthy after {timeout}s:\n"
                    f"{self.output()}"
                )
            time.sleep(0.05)

    def wait(self, timeout: float = 30.0) -> int:
        """Wait for the process to exit by itself; its exit code."""
        assert self.process is not None
        return self.process.wait(timeout=timeout)

    def stop(self, sig: int | None = None, timeout: float = 30.0) -> int | None:
        """Send ``sig`` (default SIGTERM) and wait; SIGKILL after ``timeout``. The exit code."""
        import signal

        if self.process is None:
            return None
        process, self.process = self.process, None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM if sig is None else sig)
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        return process.returncode


class WorkerProcess:
    """A real ``python -m mimir.worker`` child process (queue helper).

    ``env`` should hold ``REDIS_URL``; short lease/heartbeat intervals keep tests fast
    (``MIMIR_WORKER_LEASE``, ``MIMIR_WORKER_HEARTBEAT`` default to 2 s and 0.2 s here).
    ``start()`` returns once the worker's heartbeat key is in Redis.
    """

    def __init__(
        self,
        env: dict[str, str],
        concurrency: int = 5,
        queues: str = "default",
        args: list[str] | None = None,
        log_path: Path | None = None,
    ) -> None:
        import os
        import tempfile

        self.env = {**os.environ, **env}
        self.env.setdefault("MIMIR_WORKER_LEASE", "2")
        self.env.setdefault("MIMIR_WORKER_HEARTBEAT", "0.2")
        self.env.setdefault("MIMIR_WORKER_GRACE", "10")
        self.concurrency = concurrency
        self.queues = queues
        self.args = list(args or [])
        self.log_path = log_path or Path(tempfile.mkstemp(prefix="mimir-worker-", suffix=".log")[1])
        self.process: subprocess.Popen[bytes] | None = None
        self._pid: int | None = None

    @property
    def pid(self) -> int:
        assert self._pid is not None, "worker not started"
        return self._pid

    @property
    def worker_id(self) -> str:
        return f"worker-{socket.gethostname()}-{self.pid}"

    @property
    def command(self) -> list[str]:
        import sys

        return [
            sys.executable,
            "-m",
            "mimir.worker",
            "--concurrency",
            str(self.concurrency),
            "--queues",
            self.queues,
            *self.args,
        ]

    def output(self, lines: int = 60) -> str:
        """The last ``lines`` lines the worker logged."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def start(self, timeout: float = 20.0) -> WorkerProcess:
        """Launch and wait until the worker's heartbeat key exists in Redis."""
        import redis

        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        self._pid = self.process.pid
        prefix = self.env.get("MIMIR_KEY_PREFIX", "mimir:")
        from mimir.core.queue.connection import resolve_primary_url

        client = redis.Redis.from_url(resolve_primary_url(self.env["REDIS_URL"]), socket_timeout=2)
        try:
            deadline = time.monotonic() + timeout
            while not client.exists(f"{prefix}worker:{self.worker_id}"):
                if self.process.poll() is not None:
                    raise RuntimeError(
                        f"worker exited with {self.process.returncode}:\n{self.output()}"
                    )
                if time.monotonic() > deadline:
                    self.kill()
                    raise RuntimeError(f"worker not registered after {timeout}s:\n{self.output()}")
                time.sleep(0.02)
        finally:
            client.close()
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait(self, timeout: float = 30.0) -> int:
        """Wait for the process to exit; its exit code."""
        assert self.process is not None
        return self.process.wait(timeout=timeout)

    def stop(self, sig: int | None = None, timeout: float = 30.0) -> int | None:
        """Send ``sig`` (default SIGTERM) and wait; SIGKILL after ``timeout``. The exit code."""
        import signal

        if self.process is None:
            return None
        process = self.process
        if process.poll() is None:
            process.send_signal(signal.SIGTERM if sig is None else sig)
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        return process.returncode

    def kill(self) -> None:
        """SIGKILL: the worker dies at once, holding whatever it held."""
        import signal

        self.stop(signal.SIGKILL, timeout=10)
