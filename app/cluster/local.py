"""The local-process backend: redis-server, the API server and N workers as child processes.

Each process runs in its own session, so the cluster outlives the command (or console) that
started it. Everything lives in ``<state_dir>/<project>/``::

    state.json        what runs: pid + start time of each process, ports, Redis URL
    logs/<name>.log   stdout+stderr of redis, backend, worker-1, worker-2 …
    redis/            Redis's append-only file (the queue survives a restart)
    .lock             held while a command changes the cluster

A pid is trusted only when the process with that pid was started at the recorded time;
anything else is a *stale* entry (the process died, or the machine rebooted).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Literal

import httpx
import psutil

from mimir.app.cluster.base import (
    ClusterError,
    ClusterStatus,
    LogLine,
    Progress,
    ServiceStats,
    ServiceStatus,
)
from mimir.app.cluster.instances import Instance
from mimir.app.cluster.local_state import (
    LocalState,
    ProcessEntry,
    project_lock,
    read_state,
    write_state,
)
from mimir.app.cluster.topology import SERVICE_KINDS, validate_project_name
from mimir.core.redis_embedded import EmbeddedRedisError, find_redis_server
from mimir.core.settings import Settings

__all__ = ["LocalBackend", "LocalState", "ProcessEntry", "tail_lines"]

logger = logging.getLogger(__name__)

#: How far a recorded start time may differ from the process's before the pid is "reused".
_CREATE_TIME_SLACK = 1.0


def _no_progress(step: str, message: str) -> None:
    logger.info("%s: %s", step, message)


def _redis_binary() -> str:
    try:
        return find_redis_server()[0]
    except EmbeddedRedisError as exc:
        raise ClusterError(str(exc)) from exc


def _answers_ping(port: int) -> bool:
    """True when Redis on ``port`` answers PING (not ``-LOADING`` while it reads its AOF)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.settimeout(0.5)
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def tail_lines(path: Path, count: int) -> list[str]:
    """The last ``count`` lines of a text file (``[]`` when it does not exist)."""
    if count <= 0:
        return []
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            block, data = 8192, b""
            while size > 0 and data.count(b"\n") <= count:
                step = min(block, size)
                size -= step
                handle.seek(size)
                data = handle.read(step) + data
    except FileNotFoundError:
        return []
    lines = data.decode("utf-8", "replace").splitlines()
    return lines[-count:]


def _port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def _port_owner(port: int) -> str:
    """Best effort: ``"pid 123 (python)"`` of the process listening on ``port``."""
    try:
        for conn in psutil.net_connections(kind="tcp"):
            if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN:
                if conn.pid:
                    with contextlib.suppress(psutil.Error):
                        return f"pid {conn.pid} ({psutil.Process(conn.pid).name()})"
                return "another process"
    except (psutil.Error, OSError):
        pass
    return "another process"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LocalBackend:
    """:class:`~mimir.app.cluster.base.ClusterBackend` over local child processes."""

    backend: Literal["local"] = "local"

    def __init__(
        self,
        project: str = "mimir",
        settings: Settings | None = None,
        *,
        api_port: int | None = None,
        redis_url: str | None = None,
        worker_concurrency: int | None = None,
        grace: float = 30.0,
        start_timeout: float = 90.0,
        python: str = sys.executable,
    ) -> None:
        """``api_port`` defaults to ``settings.port``; ``redis_url`` uses an external Redis
        instead of starting one; ``grace`` is how long a stopping worker may take to hand back
        its jobs before it is killed."""
        self.project = validate_project_name(project)
        self.settings = settings or Settings.from_env()
        self.api_port = api_port or self.settings.port
        self.external_redis_url = redis_url
        self.worker_concurrency = worker_concurrency or self.settings.worker_concurrency
        self.grace = grace
        self.start_timeout = start_timeout
        self.python = python
        self.directory = self.settings.state_dir / self.project
        self._children: dict[int, subprocess.Popen[bytes]] = {}

    # ---------------------------------------------------------------- paths and state

    @property
    def state_path(self) -> Path:
        return self.directory / "state.json"

    @property
    def logs_dir(self) -> Path:
        return self.directory / "logs"

    def load_state(self) -> LocalState | None:
        """The recorded cluster, or ``None`` when none was started (or it was taken down)."""
        return read_state(self.state_path)

    def _save_state(self, state: LocalState) -> None:
        write_state(self.state_path, state)

    def _locked(self) -> contextlib.AbstractContextManager[None]:
        """One changing command at a time per project."""
        return project_lock(self.directory, self.project)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def _headers(self) -> dict[str, str]:
        token = self.settings.api_token
        return {"Authorization": f"Bearer {token}"} if token else {}

    # ---------------------------------------------------------------- processes

    def is_alive(self, entry: ProcessEntry) -> bool:
        """True when ``entry``'s process runs (same pid *and* same start time)."""
        child = self._children.get(entry.pid)
        if child is not None and child.poll() is not None:
            del self._children[entry.pid]
            return False
        try:
            proc = psutil.Process(entry.pid)
            if abs(proc.create_time() - entry.create_time) > _CREATE_TIME_SLACK:
                return False
            return proc.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    def _spawn(
        self,
        name: str,
        service: Literal["redis", "backend", "worker"],
        argv: list[str],
        env: dict[str, str],
    ) -> ProcessEntry:
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.logs_dir / f"{name}.log"
        with log_path.open("ab") as log:
            offset = log.tell()
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
            log.write(f"--- {stamp} mimir cluster: starting {name}\n".encode())
            log.flush()
            try:
                proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    cwd=self.directory,
                    # Own session: no SIGINT/SIGHUP from the terminal that started us.
                    start_new_session=True,
                    close_fds=True,
                )
            except OSError as exc:
                raise ClusterError(f"cannot start {name} ({argv[0]}): {exc}") from exc
        self._children[proc.pid] = proc
        try:
            create_time = psutil.Process(proc.pid).create_time()
        except psutil.Error:
            create_time = time.time()
        logger.info("started %s (pid %d)", name, proc.pid)
        return ProcessEntry(name, service, proc.pid, create_time, str(log_path), offset)

    def _stop_entries(self, entries: list[ProcessEntry], grace: float) -> None:
        """SIGTERM ``entries``, wait up to ``grace`` seconds, then SIGKILL what remains."""
        procs: list[psutil.Process] = []
        for entry in entries:
            if not self.is_alive(entry):
                continue
            try:
                proc = psutil.Process(entry.pid)
                proc.send_signal(signal.SIGTERM)
                procs.append(proc)
            except psutil.Error:
                continue
        _, alive = psutil.wait_procs(procs, timeout=grace)
        for proc in alive:
            logger.warning("pid %d did not stop within %.0fs: killing it", proc.pid, grace)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(psutil.Error):
                proc.kill()
        psutil.wait_procs(alive, timeout=5)
        for entry in entries:
            child = self._children.pop(entry.pid, None)
            if child is not None:
                with contextlib.suppress(Exception):
                    child.wait(timeout=1)

    def _child_env(self, state: LocalState) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "REDIS_URL": state.redis_url,
                "MIMIR_PORT": str(state.api_port),
                "MIMIR_DATA_DIR": str(self.settings.data_dir),
                "MIMIR_PIPELINES_DIR": str(self.settings.pipelines_dir),
                "MIMIR_STATE_DIR": str(self.settings.state_dir),
                "MIMIR_KEY_PREFIX": self.settings.key_prefix,
                "MIMIR_LOG_LEVEL": self.settings.log_level,
                "MIMIR_JOB_TTL": str(self.settings.job_ttl),
                "WORKER_CONCURRENCY": str(self.worker_concurrency),
                # Workers finish or hand back their jobs before our SIGKILL deadline.
                "MIMIR_WORKER_GRACE": str(max(1.0, self.grace - 5)),
                "PYTHONUNBUFFERED": "1",
            }
        )
        if self.settings.api_token:
            env["MIMIR_API_TOKEN"] = self.settings.api_token
        if self.settings.fuseki_url:
            env["FUSEKI_URL"] = self.settings.fuseki_url
        return env

    def _start_redis(self, state: LocalState) -> ProcessEntry:
        assert state.redis_port is not None
        data = self.directory / "redis"
        data.mkdir(parents=True, exist_ok=True)
        argv = [
            _redis_binary(),
            "--port", str(state.redis_port),
            "--bind", "127.0.0.1",
            "--dir", str(data),
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--save", "",
            "--daemonize", "no",
            "--logfile", "",
        ]  # fmt: skip
        return self._spawn("redis", "redis", argv, dict(os.environ))

    def _start_backend(self, state: LocalState) -> ProcessEntry:
        argv = [
            self.python, "-m", "mimir.server", "--host", "127.0.0.1", "--port", str(state.api_port)
        ]  # fmt: skip
        return self._spawn("backend", "backend", argv, self._child_env(state))

    def _start_worker(self, state: LocalState, number: int) -> ProcessEntry:
        argv = [self.python, "-m", "mimir.worker"]
        return self._spawn(f"worker-{number}", "worker", argv, self._child_env(state))

    def _failure(self, entry: ProcessEntry, message: str) -> ClusterError:
        lines = tail_lines(Path(entry.log), 20)
        detail = "\n".join(f"{entry.name} | {line}" for line in lines)
        return ClusterError(f"{message} (log: {entry.log})", detail=detail)

    # ---------------------------------------------------------------- waiting

    async def _wait_redis(self, entry: ProcessEntry, port: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if not self.is_alive(entry):
                raise self._failure(entry, f"{entry.name} exited while starting")
            if await asyncio.to_thread(_answers_ping, port):
                return
            if time.monotonic() > deadline:
                raise self._failure(entry, f"{entry.name} did not answer PING in {timeout}s")
            await asyncio.sleep(0.05)

    async def _registered_worker_pids(self, client: httpx.AsyncClient) -> set[int] | None:
        """Pids of the workers the API lists, or ``None`` when the API does not answer."""
        try:
            response = await client.get("/api/v1/workers")
            if response.status_code != 200:
                return None
            workers = response.json().get("workers", [])
        except (httpx.HTTPError, ValueError):
            return None
        hostname = socket.gethostname()
        return {
            int(w["pid"])
            for w in workers
            if isinstance(w, dict) and w.get("pid") and w.get("hostname", hostname) == hostname
        }

    async def _wait_ready(self, state: LocalState, progress: Progress) -> None:
        """Until /health answers and every recorded worker is registered; raise if not."""
        backend = state.entry("backend")
        assert backend is not None
        deadline = time.monotonic() + self.start_timeout
        healthy = False
        async with httpx.AsyncClient(
            base_url=self.api_url, timeout=3.0, headers=self._headers()
        ) as client:
            while True:
                for entry in state.processes:
                    if not self.is_alive(entry):
                        raise self._failure(entry, f"{entry.name} exited while starting")
                if not healthy:
                    with contextlib.suppress(httpx.HTTPError):
                        healthy = (await client.get("/health")).status_code == 200
                    if healthy:
                        progress("health", f"API answers at {self.api_url}")
                if healthy:
                    want = {entry.pid for entry in state.entries("worker")}
                    seen = await self._registered_worker_pids(client)
                    if seen is not None and want <= seen:
                        progress("workers", f"{len(want)} worker(s) registered")
                        return
                if time.monotonic() > deadline:
                    if not healthy:
                        raise self._failure(
                            backend, f"the API did not answer /health in {self.start_timeout}s"
                        )
                    missing = [e for e in state.entries("worker") if e.pid not in (seen or set())]
                    raise self._failure(
                        missing[0] if missing else backend,
                        f"{len(missing)} worker(s) did not register in {self.start_timeout}s",
                    )
                await asyncio.sleep(0.25)

    # ---------------------------------------------------------------- protocol

    async def up(self, workers: int = 2, progress: Progress | None = None) -> ClusterStatus:
        """Start (or complete) the cluster with ``workers`` workers; wait until it is ready."""
        report = progress or _no_progress
        if workers < 0:
            raise ClusterError(f"workers must be 0 or more, got {workers}")
        with self._locked():
            state = self.load_state()
            if state is not None and not any(self.is_alive(e) for e in state.processes):
                report("state", "found a stale cluster record (no process alive): starting anew")
                state = None
            if state is None:
                state = await self._fresh_state()
            else:
                self.api_port = state.api_port
                report("state", f"cluster {self.project!r} already recorded: completing it")
            started: list[ProcessEntry] = []
            try:
                await self._ensure_core(state, report, started)
                await self._scale_workers(state, workers, report, started)
                report("wait", "waiting for /health and worker heartbeats")
                await self._wait_ready(state, report)
            except BaseException:
                # Leave nothing half-started behind; logs stay for inspection.
                await asyncio.to_thread(self._stop_entries, started, 5.0)
                state.processes = [e for e in state.processes if e not in started]
                if state.processes:
                    self._save_state(state)
                else:
                    self.state_path.unlink(missing_ok=True)
                raise
        report("up", f"cluster {self.project!r} is up: API {self.api_url}, {workers} worker(s)")
        return await self.status()

    async def _fresh_state(self) -> LocalState:
        if await asyncio.to_thread(_port_in_use, self.api_port):
            owner = await asyncio.to_thread(_port_owner, self.api_port)
            raise ClusterError(
                f"port {self.api_port} on 127.0.0.1 is already in use by {owner}: stop it, or "
                f"choose another port (mimir cluster up --port N)"
            )
        if self.external_redis_url:
            return LocalState(self.project, self.api_port, None, self.external_redis_url, False)
        port = _free_port()
        return LocalState(self.project, self.api_port, port, f"redis://127.0.0.1:{port}/0")

    async def _ensure_core(
        self, state: LocalState, report: Progress, started: list[ProcessEntry]
    ) -> None:
        """Start redis and the backend unless they run."""
        if state.own_redis:
            redis = state.entry("redis")
            if redis is None or not self.is_alive(redis):
                report("redis", f"starting redis-server on 127.0.0.1:{state.redis_port}")
                entry = await asyncio.to_thread(self._start_redis, state)
                self._replace(state, redis, entry, started)
                assert state.redis_port is not None
                await self._wait_redis(entry, state.redis_port, 20.0)
        backend = state.entry("backend")
        if backend is None or not self.is_alive(backend):
            report("backend", f"starting the API server on 127.0.0.1:{state.api_port}")
            entry = await asyncio.to_thread(self._start_backend, state)
            self._replace(state, backend, entry, started)

    def _replace(
        self,
        state: LocalState,
        old: ProcessEntry | None,
        new: ProcessEntry,
        started: list[ProcessEntry],
    ) -> None:
        if old is not None:
            state.processes.remove(old)
        state.processes.append(new)
        started.append(new)
        self._save_state(state)

    async def _scale_workers(
        self, state: LocalState, workers: int, report: Progress, started: list[ProcessEntry]
    ) -> None:
        # Dead workers are replaced, not counted.
        for entry in state.entries("worker"):
            if not self.is_alive(entry):
                report("worker", f"{entry.name} (pid {entry.pid}) is gone: removing its record")
                state.processes.remove(entry)
        current = sorted(state.entries("worker"), key=lambda e: int(e.name.rsplit("-", 1)[1]))
        if len(current) > workers:
            leaving = current[workers:]
            names = ", ".join(e.name for e in leaving)
            report("scale", f"stopping {names} (SIGTERM, {self.grace:.0f}s grace)")
            await asyncio.to_thread(self._stop_entries, leaving, self.grace)
            for entry in leaving:
                state.processes.remove(entry)
            self._save_state(state)
        used = {int(e.name.rsplit("-", 1)[1]) for e in current[:workers]}
        number = 0
        for _ in range(workers - len(current)):
            number += 1
            while number in used:
                number += 1
            used.add(number)
            report("worker", f"starting worker-{number}")
            entry = await asyncio.to_thread(self._start_worker, state, number)
            self._replace(state, None, entry, started)

    async def scale(self, workers: int, progress: Progress | None = None) -> ClusterStatus:
        """Run exactly ``workers`` workers (stopping extra ones gracefully)."""
        report = progress or _no_progress
        if workers < 0:
            raise ClusterError(f"workers must be 0 or more, got {workers}")
        with self._locked():
            state = self._require_running()
            started: list[ProcessEntry] = []
            try:
                await self._scale_workers(state, workers, report, started)
                await self._wait_ready(state, report)
            except BaseException:
                await asyncio.to_thread(self._stop_entries, started, 5.0)
                state.processes = [e for e in state.processes if e not in started]
                self._save_state(state)
                raise
        report("scale", f"{workers} worker(s) running")
        return await self.status()

    def _require_running(self) -> LocalState:
        state = self.load_state()
        if state is None:
            raise ClusterError(
                f"no local cluster {self.project!r} is running (start one: mimir cluster up "
                f"--backend local --project {self.project})"
            )
        self.api_port = state.api_port
        backend = state.entry("backend")
        if backend is None or not self.is_alive(backend):
            raise ClusterError(
                f"the local cluster {self.project!r} is recorded but its API server is not "
                f"running (stale state): run 'mimir cluster up' to restart it or "
                f"'mimir cluster down' to clear it"
            )
        return state

    async def down(self, progress: Progress | None = None) -> None:
        """Stop workers (gracefully), then the server, then Redis; keep data and logs."""
        report = progress or _no_progress
        with self._locked():
            state = self.load_state()
            if state is None:
                report("down", f"no local cluster {self.project!r} is recorded")
                return
            for service in ("worker", "backend", "redis"):
                entries = state.entries(service)
                alive = [e for e in entries if self.is_alive(e)]
                if alive:
                    report("down", f"stopping {', '.join(e.name for e in alive)}")
                    await asyncio.to_thread(self._stop_entries, alive, self.grace)
                for entry in entries:
                    state.processes.remove(entry)
                self._save_state(state)
            self.state_path.unlink(missing_ok=True)
        report("down", f"cluster {self.project!r} stopped (data kept in {self.directory})")

    async def clean(self, progress: Progress | None = None) -> None:
        """:meth:`down`, then remove the project's directory (Redis data, logs)."""
        report = progress or _no_progress
        await self.down(progress)
        if self.directory.exists():
            await asyncio.to_thread(shutil.rmtree, self.directory, True)
        report("clean", f"removed {self.directory}")

    async def restart(self, service: str, progress: Progress | None = None) -> ClusterStatus:
        """Restart ``redis``, ``backend`` (or ``server``), ``worker`` (all) or ``worker-N``."""
        report = progress or _no_progress
        name = "backend" if service == "server" else service
        with self._locked():
            state = self.load_state()
            if state is None:
                raise ClusterError(f"no local cluster {self.project!r} is running")
            self.api_port = state.api_port
            if name in SERVICE_KINDS:
                targets = state.entries(name)
            else:
                entry = state.entry(name)
                targets = [entry] if entry else []
            if not targets:
                known = ", ".join(["redis", "backend", "worker"] + [
                    e.name for e in state.entries("worker")
                ])  # fmt: skip
                raise ClusterError(f"unknown service {service!r}; choose from {known}")
            report("restart", f"stopping {', '.join(e.name for e in targets)}")
            await asyncio.to_thread(self._stop_entries, targets, self.grace)
            started: list[ProcessEntry] = []
            for old in targets:
                report("restart", f"starting {old.name}")
                if old.service == "redis":
                    new = await asyncio.to_thread(self._start_redis, state)
                    self._replace(state, old, new, started)
                    assert state.redis_port is not None
                    await self._wait_redis(new, state.redis_port, 20.0)
                elif old.service == "backend":
                    new = await asyncio.to_thread(self._start_backend, state)
                    self._replace(state, old, new, started)
                else:
                    number = int(old.name.rsplit("-", 1)[1])
                    new = await asyncio.to_thread(self._start_worker, state, number)
                    self._replace(state, old, new, started)
            await self._wait_ready(state, report)
        return await self.status()

    async def instances(self) -> list[Instance]:
        """Every recorded process, stale ones included (state ``stale``)."""
        state = self.load_state()
        if state is None:
            return []
        out = []
        for entry in state.processes:
            alive = self.is_alive(entry)
            out.append(
                Instance(
                    name=entry.name,
                    service=entry.service,
                    kind=SERVICE_KINDS[entry.service],
                    state="running" if alive else "stale",
                    ident=str(entry.pid),
                    detail=f"log {entry.log}" if alive else "process gone; 'up' or 'down' clears",
                )
            )
        return out

    async def status(self) -> ClusterStatus:
        """State of redis, backend and the worker pool (stale entries show as ``stale``)."""
        state = self.load_state()
        if state is None:
            missing = [
                ServiceStatus(name, kind, "missing", replicas=0)
                for name, kind in SERVICE_KINDS.items()
            ]
            return ClusterStatus("local", self.project, missing, None)
        self.api_port = state.api_port
        health, registered = await self._probe_api()
        services: list[ServiceStatus] = []
        redis = state.entry("redis")
        if state.own_redis:
            alive = redis is not None and self.is_alive(redis)
            services.append(
                ServiceStatus(
                    "redis",
                    "redis",
                    "running" if alive else "stale",
                    replicas=int(alive),
                    ports={"6379/tcp": f"127.0.0.1:{state.redis_port}"},
                )
            )
        else:
            services.append(
                ServiceStatus("redis", "redis", "external", ports={"url": state.redis_url})
            )
        backend = state.entry("backend")
        alive = backend is not None and self.is_alive(backend)
        services.append(
            ServiceStatus(
                "backend",
                "server",
                "running" if alive else "stale",
                health=health if alive else "",
                replicas=int(alive),
                ports={"8080/tcp": f"127.0.0.1:{state.api_port}"},
            )
        )
        workers = state.entries("worker")
        live = [e for e in workers if self.is_alive(e)]
        if not workers:
            worker_state, worker_health = "stopped", ""
        elif not live:
            worker_state, worker_health = "stale", ""
        else:
            worker_state = "running"
            if len(live) < len(workers) or registered is None:
                worker_health = "unhealthy"
            elif {e.pid for e in live} <= registered:
                worker_health = "healthy"
            else:
                worker_health = "starting"
        services.append(
            ServiceStatus("worker", "worker", worker_state, worker_health, replicas=len(live))
        )
        api = self.api_url if alive else None
        return ClusterStatus("local", self.project, services, api)

    async def _probe_api(self) -> tuple[str, set[int] | None]:
        async with httpx.AsyncClient(
            base_url=self.api_url, timeout=2.0, headers=self._headers()
        ) as client:
            try:
                ok = (await client.get("/health")).status_code == 200
            except httpx.HTTPError:
                return "unhealthy", None
            return ("healthy" if ok else "unhealthy"), await self._registered_worker_pids(client)

    async def logs(
        self, services: list[str] | None = None, follow: bool = False, tail: int = 100
    ) -> AsyncIterator[LogLine]:
        """The last ``tail`` lines of each selected process's log, then (``follow``) new lines
        as they are written, including those of workers started meanwhile."""
        state = self.load_state()
        if state is None:
            raise ClusterError(f"no local cluster {self.project!r} is recorded")
        wanted = {"backend" if s == "server" else s for s in services or []}
        names = {e.name for e in state.processes} | set(SERVICE_KINDS)
        unknown = wanted - names
        if unknown:
            raise ClusterError(
                f"unknown service(s) {', '.join(sorted(unknown))}; choose from "
                f"{', '.join(sorted(names))}"
            )

        def selected(entry: ProcessEntry) -> bool:
            return not wanted or entry.service in wanted or entry.name in wanted

        positions: dict[str, int] = {}
        partial: dict[str, str] = {}
        for entry in state.processes:
            if not selected(entry):
                continue
            path = Path(entry.log)
            for line in await asyncio.to_thread(tail_lines, path, tail):
                yield LogLine(entry.name, line)
            positions[entry.log] = path.stat().st_size if path.exists() else 0
        if not follow:
            return
        known = {e.name: e for e in state.processes if selected(e)}
        last_scan = time.monotonic()
        while True:
            if time.monotonic() - last_scan > 1.0:
                last_scan = time.monotonic()
                fresh = self.load_state()
                for entry in fresh.processes if fresh else []:
                    if selected(entry) and entry.log not in positions:
                        positions[entry.log] = entry.log_offset
                    if selected(entry):
                        known[entry.name] = entry
            got_any = False
            for entry in list(known.values()):
                chunk = await asyncio.to_thread(_read_from, Path(entry.log), positions, entry.log)
                if not chunk:
                    continue
                got_any = True
                text = partial.pop(entry.log, "") + chunk
                *lines, rest = text.split("\n")
                if rest:
                    partial[entry.log] = rest
                now = time.time()
                for line in lines:
                    yield LogLine(entry.name, line, now)
            if not got_any:
                await asyncio.sleep(0.2)

    async def stats(self) -> list[ServiceStats]:
        """CPU % (over a 0.5 s sample) and resident memory of each live process."""
        state = self.load_state()
        if state is None:
            return []
        live = [e for e in state.processes if self.is_alive(e)]
        return await asyncio.to_thread(_sample_stats, live, 0.5)

    async def build(self, progress: Progress | None = None) -> None:
        """Nothing to build: local processes run the installed package."""
        (progress or _no_progress)("build", "the local backend runs the installed package")


def _read_from(path: Path, positions: dict[str, int], key: str) -> str:
    try:
        with path.open("rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            start = positions.get(key, 0)
            if size < start:  # truncated or replaced: start over
                start = 0
            handle.seek(start)
            data = handle.read(1 << 20)
            positions[key] = start + len(data)
    except FileNotFoundError:
        return ""
    return data.decode("utf-8", "replace")


def _sample_stats(entries: list[ProcessEntry], interval: float) -> list[ServiceStats]:
    """Per process (with its children): CPU % over ``interval`` seconds, RSS."""
    groups: list[tuple[ProcessEntry, list[psutil.Process]]] = []
    for entry in entries:
        try:
            proc = psutil.Process(entry.pid)
            procs = [proc, *proc.children(recursive=True)]
        except psutil.Error:
            continue
        for p in procs:
            with contextlib.suppress(psutil.Error):
                p.cpu_percent(None)
        groups.append((entry, procs))
    time.sleep(interval)
    out = []
    for entry, procs in groups:
        cpu, rss = 0.0, 0
        for p in procs:
            with contextlib.suppress(psutil.Error):
                cpu += p.cpu_percent(None)
                rss += p.memory_info().rss
        out.append(ServiceStats(entry.name, SERVICE_KINDS[entry.service], round(cpu, 1), rss))
    return out
