"""The local-process backend: redis-server, the API server and each pool's workers as child
processes.

Each process runs in its own session, so the cluster outlives the command (or console) that
started it. Everything lives in ``<state_dir>/<project>/``::

    state.json        what runs: pid + start time of each process, ports, Redis URL, the
                      cluster file (its pools) and the replicas each pool should run
    logs/<name>.log   stdout+stderr of redis, backend, worker-1, worker-2 … (the pool
                      ``default``), worker-slow-1 … (the pool ``slow``)
    redis/            Redis's append-only file (the queue survives a restart)
    secrets/          (0700) redis-password (0600, generated at the first ``up``, kept by
                      ``down``) and redis.conf (0600: requirepass, maxmemory
                      MIMIR_REDIS_MAXMEMORY default 1gb, noeviction), read by redis-server;
                      the server and workers get MIMIR_REDIS_PASSWORD_FILE, never the password
    prometheus/       ``up --monitoring``: the generated prometheus.yml, the API token as a
                      file (mode 0600, when the API has one) and data/ (the TSDB)
    data/, pipelines/ the cluster's data and pipeline directories, for every project but the
                      default one (``mimir`` keeps the per-user directories) unless
                      MIMIR_DATA_DIR / MIMIR_PIPELINES_DIR name others
    .lock             held while a command changes the cluster

A pid is trusted only when the process with that pid was started at the recorded time;
anything else is a *stale* entry (the process died, or the machine rebooted).

The console calls these coroutines on its Qt event loop every few seconds: everything that
can block (the state file, the lock file, psutil, spawning, waiting for processes) runs in a
thread, and the lock is waited for with ``asyncio.sleep``.
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
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Literal

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
from mimir.app.cluster.monitoring import (
    CONFIG_FILE,
    PROMETHEUS_PACKAGE,
    TOKEN_FILE,
    prometheus_config,
)
from mimir.app.cluster.readiness import ClusterProbe, wait_until_ready
from mimir.app.cluster.topology import (
    OPTIONAL_SERVICE_KINDS,
    PROMETHEUS,
    PROMETHEUS_PORT,
    SERVICE_KINDS,
    build_topology,
    canonical_service,
    parse_worker_name,
    pool_service,
    replica_name,
    unknown_pool,
    validate_project_name,
    worker_command,
)
from mimir.app.cluster.worker_pool import (
    StopBudget,
    check_pool_count,
    check_worker_count,
    plan_scale,
)
from mimir.app.cluster.worker_pool import worker_health as worker_health_of
from mimir.core.pools import DEFAULT_POOL, POOLS_ENV, ClusterFile, PoolSpec, pools_to_env
from mimir.core.redis_embedded import (
    EmbeddedRedisError,
    RedisSecrets,
    answers_ping,
    find_redis_server,
    redis_secrets,
)
from mimir.core.settings import Settings, default_data_dir, default_pipelines_dir

__all__ = ["LocalBackend", "LocalState", "ProcessEntry", "tail_lines"]

logger = logging.getLogger(__name__)

#: How far a recorded start time may differ from the process's before the pid is "reused".
_CREATE_TIME_SLACK = 1.0
#: Every process's kind, Prometheus's too.
_KINDS = {**SERVICE_KINDS, **OPTIONAL_SERVICE_KINDS}


def _prometheus_binary() -> str:
    """The ``prometheus`` program on PATH; a :class:`ClusterError` naming the package."""
    found = shutil.which("prometheus")
    if found is None:
        raise ClusterError(
            "--monitoring on the local backend runs the 'prometheus' program, which is not on "
            f"PATH: install it (Debian/Ubuntu: apt-get install {PROMETHEUS_PACKAGE}; or a "
            "release from https://prometheus.io/download/), or use the docker backend"
        )
    return found


def _answers_ready(port: int) -> bool:
    """True when Prometheus on ``port`` answers ``/-/ready`` with 200."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=1) as answer:
            return bool(answer.status == 200)
    except (OSError, ValueError):
        return False


def _no_progress(step: str, message: str) -> None:
    logger.info("%s: %s", step, message)


def _redis_binary() -> str:
    try:
        return find_redis_server()[0]
    except EmbeddedRedisError as exc:
        raise ClusterError(str(exc)) from exc


def _answers_ping(port: int, password: str | None = None) -> bool:
    """True when Redis on ``port`` answers PING (not ``-LOADING`` while it reads its AOF),
    after AUTH with ``password`` when given."""
    return answers_ping(port, password=password)


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
        monitoring: bool = False,
        prometheus_port: int | None = None,
        scrape_interval: str | None = None,
    ) -> None:
        """``api_port`` defaults to ``settings.port``; ``redis_url`` uses an external Redis
        instead of starting one; ``grace`` is how long a stopping worker may take to hand back
        its jobs before it is killed. ``monitoring`` makes ``up`` run Prometheus (the
        ``prometheus`` program on PATH) on ``127.0.0.1:prometheus_port`` (default 9090),
        scraping every ``scrape_interval`` (default ``15s``)."""
        self.project = validate_project_name(project)
        self.settings = settings or Settings.from_env()
        self.api_port = api_port or self.settings.port
        #: The port asked for (``up --port``), as opposed to the default.
        self.requested_port = api_port
        self.external_redis_url = redis_url
        self.worker_concurrency = worker_concurrency or self.settings.worker_concurrency
        self.grace = grace
        self.start_timeout = start_timeout
        self.python = python
        self.directory = self.settings.state_dir / self.project
        self.monitoring = monitoring
        self.prometheus_port = prometheus_port
        self.scrape_interval = scrape_interval
        self._children: dict[int, subprocess.Popen[bytes]] = {}

    # ---------------------------------------------------------------- paths and state

    @property
    def state_path(self) -> Path:
        return self.directory / "state.json"

    @property
    def logs_dir(self) -> Path:
        return self.directory / "logs"

    @property
    def data_dir(self) -> Path:
        """The cluster's data directory (stores, plugin files): MIMIR_DATA_DIR when set, the
        per-user default for the default project, else ``<state_dir>/<project>/data`` so that
        two local clusters never share a run store or an ontology store."""
        return self._own_dir(self.settings.data_dir, default_data_dir(), "data")

    @property
    def pipelines_dir(self) -> Path:
        """The cluster's pipeline directory, chosen like :attr:`data_dir`."""
        return self._own_dir(self.settings.pipelines_dir, default_pipelines_dir(), "pipelines")

    @property
    def redis_dir(self) -> Path:
        """Where the cluster's own Redis keeps its append-only file."""
        return self.directory / "redis"

    @property
    def secrets_dir(self) -> Path:
        """The Redis password and configuration (module doc)."""
        return self.directory / "secrets"

    def _redis_secrets(self) -> RedisSecrets:
        try:
            return redis_secrets(self.secrets_dir)
        except (EmbeddedRedisError, OSError) as exc:
            raise ClusterError(
                f"cannot prepare the Redis password in {self.secrets_dir}: {exc}"
            ) from exc

    def _own_dir(self, configured: Path, default: Path, name: str) -> Path:
        if configured != default or self.project == "mimir":
            return configured
        return self.directory / name

    def load_state(self) -> LocalState | None:
        """The recorded cluster, or ``None`` when none was started (or it was taken down)."""
        return read_state(self.state_path)

    async def _load(self) -> LocalState | None:
        return await asyncio.to_thread(self.load_state)

    async def _save(self, state: LocalState) -> None:
        await asyncio.to_thread(write_state, self.state_path, state)

    async def _forget(self) -> None:
        await asyncio.to_thread(self.state_path.unlink, True)

    def _locked(self) -> contextlib.AbstractAsyncContextManager[None]:
        """One changing command at a time per project."""
        return project_lock(self.directory, self.project)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    async def _probe(self) -> ClusterProbe:
        return await ClusterProbe.open(self.api_url, self.settings.api_token)

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

    def alive_pids(self, entries: list[ProcessEntry]) -> set[int]:
        """Pids of the ``entries`` whose process runs (blocking: call in a thread)."""
        return {entry.pid for entry in entries if self.is_alive(entry)}

    async def _alive(self, entries: list[ProcessEntry]) -> set[int]:
        return await asyncio.to_thread(self.alive_pids, entries)

    def _spawn(
        self,
        name: str,
        service: Literal["redis", "backend", "worker", "prometheus"],
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
        """SIGTERM ``entries`` and give them ``grace`` seconds, then SIGKILL what remains.

        Workers get a second SIGTERM when only :attr:`StopBudget.hand_back` seconds are left:
        they hand their running jobs back then, whatever their own grace (fixed at start).
        """
        procs: list[psutil.Process] = []
        workers: set[int] = set()
        for entry in entries:
            if not self.is_alive(entry):
                continue
            try:
                proc = psutil.Process(entry.pid)
                proc.send_signal(signal.SIGTERM)
                procs.append(proc)
            except psutil.Error:
                continue
            if entry.service == "worker":
                workers.add(entry.pid)
        budget = StopBudget.of(grace)
        _, alive = psutil.wait_procs(procs, timeout=budget.finish)
        hurried = [proc for proc in alive if proc.pid in workers]
        for proc in hurried:
            logger.info("pid %d still has jobs after %.0fs: asking it to hand them back", proc.pid,
                        budget.finish)  # fmt: skip
            with contextlib.suppress(psutil.Error):
                proc.send_signal(signal.SIGTERM)
        if alive:
            _, alive = psutil.wait_procs(alive, timeout=budget.hand_back)
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
                "MIMIR_DATA_DIR": str(self.data_dir),
                "MIMIR_PIPELINES_DIR": str(self.pipelines_dir),
                "MIMIR_STATE_DIR": str(self.settings.state_dir),
                "MIMIR_KEY_PREFIX": self.settings.key_prefix,
                "MIMIR_PROJECT": self.project,
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
        if state.own_redis:
            # The file's path, never the password; one inherited for another Redis is not ours.
            env.pop("MIMIR_REDIS_PASSWORD_FILE", None)
            if state.redis_auth:
                env["MIMIR_REDIS_PASSWORD_FILE"] = str(self.secrets_dir / "redis-password")
        if self.settings.fuseki_url:
            env["FUSEKI_URL"] = self.settings.fuseki_url
        return env

    def _start_redis(self, state: LocalState) -> ProcessEntry:
        assert state.redis_port is not None
        data = self.redis_dir
        data.mkdir(parents=True, exist_ok=True)
        # The password is in the configuration file, so in no command line.
        config = [str(self._redis_secrets().config_file)] if state.redis_auth else []
        argv = [
            _redis_binary(),
            *config,
            "--port", str(state.redis_port),
            "--protected-mode", "yes",
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
        env = self._child_env(state)
        # The pools, and how its autoscaler reaches them (`mimir cluster scale --backend
        # local --project P`, run with this environment: MIMIR_STATE_DIR finds the state).
        env[POOLS_ENV] = pools_to_env(state.cluster_file)
        env["MIMIR_CLUSTER_BACKEND"] = self.backend
        return self._spawn("backend", "backend", argv, env)

    @property
    def prometheus_dir(self) -> Path:
        """Prometheus's configuration, token file and TSDB (``data/``)."""
        return self.directory / PROMETHEUS

    def _write_prometheus_config(self, state: LocalState) -> Path:
        """The configuration generated from the cluster's topology (its targets as published
        on 127.0.0.1), and the token file (0600) when the API has a token."""
        assert state.prometheus_port is not None
        topology = build_topology(
            self.project,
            workers=0,
            api_port=state.api_port,
            api_token=self.settings.api_token,
            cluster=state.cluster_file,
            monitoring=True,
            prometheus_port=state.prometheus_port,
            scrape_interval=state.scrape_interval or "15s",
        )
        directory = self.prometheus_dir
        directory.mkdir(parents=True, exist_ok=True)
        token_path = directory / TOKEN_FILE
        token_path.unlink(missing_ok=True)
        if topology.api_token:
            fd = os.open(token_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(topology.api_token)
        config = directory / CONFIG_FILE
        text = prometheus_config(topology, on_host=True, credentials_file=str(token_path))
        config.write_text(text)
        return config

    def _start_prometheus(self, state: LocalState) -> ProcessEntry:
        assert state.prometheus_port is not None
        config = self._write_prometheus_config(state)
        argv = [
            _prometheus_binary(),
            f"--config.file={config}",
            f"--storage.tsdb.path={self.prometheus_dir / 'data'}",
            f"--web.listen-address=127.0.0.1:{state.prometheus_port}",
        ]
        # Its token is the file's, never in its environment.
        env = {k: v for k, v in os.environ.items() if k != "MIMIR_API_TOKEN"}
        return self._spawn(PROMETHEUS, "prometheus", argv, env)

    async def _wait_prometheus(self, entry: ProcessEntry, port: int) -> None:
        deadline = time.monotonic() + self.start_timeout
        while not await asyncio.to_thread(_answers_ready, port):
            if not await asyncio.to_thread(self.is_alive, entry):
                raise self._failure(entry, "prometheus exited while starting")
            if time.monotonic() > deadline:
                raise self._failure(
                    entry, f"prometheus did not answer /-/ready in {self.start_timeout}s"
                )
            await asyncio.sleep(0.1)

    async def _ensure_prometheus(
        self, state: LocalState, report: Progress, started: list[ProcessEntry]
    ) -> None:
        """Start Prometheus unless it runs; wait until it is ready."""
        old = state.entry(PROMETHEUS)
        if old is not None and old.pid in await self._alive([old]):
            return
        port = state.prometheus_port
        assert port is not None
        if await asyncio.to_thread(_port_in_use, port):
            owner = await asyncio.to_thread(_port_owner, port)
            raise ClusterError(
                f"port {port} on 127.0.0.1 (Prometheus) is already in use by {owner}: stop "
                "it, or choose another port (mimir cluster up --monitoring --prometheus-port N)"
            )
        report(PROMETHEUS, f"starting prometheus on 127.0.0.1:{port}")
        entry = await asyncio.to_thread(self._start_prometheus, state)
        await self._replace(state, old, entry, started)
        await self._wait_prometheus(entry, port)

    def _start_worker(self, state: LocalState, pool: PoolSpec, number: int) -> ProcessEntry:
        argv = worker_command(pool, [self.python, "-m", "mimir.worker"])
        env = self._child_env(state)
        for name in (POOLS_ENV, "MIMIR_CLUSTER_BACKEND"):  # the server's, not a worker's
            env.pop(name, None)
        env["WORKER_CONCURRENCY"] = str(pool.concurrency or self.worker_concurrency)
        env.update(pool.environment)
        # The same as the flags, for whoever reads the environment (`ps e`, a plugin).
        env["MIMIR_WORKER_POOL"] = pool.name
        if pool.job_types is not None:
            env["MIMIR_WORKER_JOB_TYPES"] = ",".join(pool.job_types)
        else:
            env.pop("MIMIR_WORKER_JOB_TYPES", None)
        entry = self._spawn(replica_name(pool.name, number), "worker", argv, env)
        entry.pool = pool.name
        return entry

    def _failure(self, entry: ProcessEntry, message: str) -> ClusterError:
        lines = tail_lines(Path(entry.log), 20)
        detail = "\n".join(f"{entry.name} | {line}" for line in lines)
        return ClusterError(f"{message} (log: {entry.log})", detail=detail)

    # ---------------------------------------------------------------- waiting

    async def _wait_redis(
        self, entry: ProcessEntry, port: int, timeout: float, auth: bool = True
    ) -> None:
        password = (await asyncio.to_thread(self._redis_secrets)).password if auth else None
        deadline = time.monotonic() + timeout
        while True:
            if not await asyncio.to_thread(self.is_alive, entry):
                raise self._failure(entry, f"{entry.name} exited while starting")
            if await asyncio.to_thread(_answers_ping, port, password):
                return
            if time.monotonic() > deadline:
                raise self._failure(entry, f"{entry.name} did not answer PING in {timeout}s")
            await asyncio.sleep(0.05)

    @staticmethod
    def worker_key(worker: dict[str, object]) -> str | None:
        """A registered worker's pid, when it runs on this machine."""
        if worker.get("hostname", socket.gethostname()) != socket.gethostname():
            return None
        return str(worker["pid"]) if worker.get("pid") else None

    async def _wait_ready(
        self, state: LocalState, progress: Progress, pools: set[str] | None = None
    ) -> None:
        """Until /ready answers and every recorded worker (of ``pools``, default all) is
        registered; raise if not."""
        backend = state.entry("backend")
        assert backend is not None

        def watched() -> list[ProcessEntry]:
            return [
                e for e in state.processes if e.service != "worker" or pools is None
                or e.pool in pools
            ]  # fmt: skip

        async def check_alive() -> None:
            entries = watched()
            alive = await self._alive(entries)
            for entry in entries:
                if entry.pid not in alive:
                    raise self._failure(entry, f"{entry.name} exited while starting")

        async def expected() -> set[str]:
            return {str(e.pid) for e in watched() if e.service == "worker"}

        async def not_ready() -> ClusterError:
            return self._failure(
                backend, f"the API was not ready at {self.api_url}/ready in {self.start_timeout}s"
            )

        async def not_registered(missing: set[str]) -> ClusterError:
            late = [e for e in state.entries("worker") if str(e.pid) in missing]
            return self._failure(
                late[0] if late else backend,
                f"{len(missing)} worker(s) did not register in {self.start_timeout}s",
            )

        async with await self._probe() as probe:
            await wait_until_ready(
                probe,
                timeout=self.start_timeout,
                report=progress,
                check_alive=check_alive,
                expected_workers=expected,
                worker_key=self.worker_key,
                not_ready=not_ready,
                not_registered=not_registered,
            )

    # ---------------------------------------------------------------- protocol

    async def up(
        self,
        workers: int | None = 2,
        progress: Progress | None = None,
        *,
        cluster: ClusterFile | None = None,
    ) -> ClusterStatus:
        """Start (or complete) the cluster; wait until it is ready.

        ``cluster`` declares the pools (default: the recorded cluster's, else one pool
        ``default``); ``workers`` sizes the pool ``default`` when the cluster has it
        (``None``: its ``initial_replicas``); the other pools start their
        ``initial_replicas`` (a running cluster keeps what they were scaled to). A running
        cluster given another cluster file stops the pools it no longer has and restarts
        its API server, which reads the pools at start.
        """
        report = progress or _no_progress
        async with self._locked():
            state = await self._load()
            if state is not None and not await self._alive(state.processes):
                report("state", "found a stale cluster record (no process alive): starting anew")
                state = None
            if self.monitoring or (state is not None and state.prometheus_port):
                _prometheus_binary()  # before anything starts
            if state is None:
                state = await self._fresh_state()
                wanted_before: dict[str, int] = {}
            else:
                if self.requested_port and self.requested_port != state.api_port:
                    raise ClusterError(
                        f"cluster {self.project!r} already runs with its API on port "
                        f"{state.api_port}, not {self.requested_port}: leave out --port, or "
                        f"'mimir cluster down --project {self.project}' first to move it"
                    )
                self.api_port = state.api_port
                report("state", f"cluster {self.project!r} already recorded: completing it")
                wanted_before = dict(state.wanted) if cluster is None else {}
            changed = cluster is not None and _dump(cluster) != _dump(state.cluster_file)
            cluster = cluster or state.cluster_file
            sizes = {
                name: (
                    workers
                    if name == DEFAULT_POOL and workers is not None
                    else wanted_before.get(name, pool.initial_replicas)
                )
                for name, pool in cluster.pools.items()
            }
            for name, count in sizes.items():
                self._check_count(cluster.pools[name], count)
            state.cluster_file = cluster
            if self.monitoring and state.prometheus_port is None:
                state.prometheus_port = self.prometheus_port or PROMETHEUS_PORT
                state.scrape_interval = self.scrape_interval or "15s"
                build_topology(self.project, scrape_interval=state.scrape_interval)  # checks it
            elif self.prometheus_port and self.prometheus_port != state.prometheus_port:
                raise ClusterError(
                    f"cluster {self.project!r} already runs Prometheus on port "
                    f"{state.prometheus_port}, not {self.prometheus_port}: leave out "
                    f"--prometheus-port, or 'mimir cluster down --project {self.project}' first"
                )
            started: list[ProcessEntry] = []
            try:
                await self._drop_undeclared_pools(state, report)
                if changed and (backend := state.entry("backend")) is not None:
                    report("backend", "the pools changed: restarting the API server")
                    await asyncio.to_thread(self._stop_entries, [backend], 10.0)
                    state.processes.remove(backend)
                    await self._save(state)
                await self._ensure_core(state, report, started)
                for name, count in sizes.items():
                    await self._scale_workers(state, cluster.pools[name], count, report, started)
                report("wait", "waiting for /ready and worker heartbeats")
                await self._wait_ready(state, report)
                if state.prometheus_port is not None:
                    await self._ensure_prometheus(state, report, started)
            except BaseException:
                # Leave nothing half-started behind; logs stay for inspection.
                await asyncio.to_thread(self._stop_entries, started, 5.0)
                state.processes = [e for e in state.processes if e not in started]
                if state.processes:
                    await self._save(state)
                else:
                    await self._forget()
                raise
        running = ", ".join(f"{count} in {name}" for name, count in sizes.items())
        report("up", f"cluster {self.project!r} is up: API {self.api_url}, workers: {running}")
        if state.own_redis and state.redis_auth:
            # The file's path (never the password), for a worker or enqueue run by hand.
            report(
                "up",
                "Redis requires a password; for a worker or enqueue run by hand: export "
                f"MIMIR_REDIS_PASSWORD_FILE={self.secrets_dir / 'redis-password'}",
            )
        if state.prometheus_port is not None:
            report("up", f"Prometheus: http://127.0.0.1:{state.prometheus_port}")
        return await self.status()

    def _check_count(self, pool: PoolSpec, workers: int) -> None:
        """``workers`` is a count ``pool`` may run (the cluster's limit, the pool's max)."""
        check_pool_count(pool, workers, self.settings.limits)

    async def _drop_undeclared_pools(self, state: LocalState, report: Progress) -> None:
        """Stop (gracefully) the workers of pools the cluster no longer declares."""
        pools = state.cluster_file.pools
        leaving = [e for e in state.entries("worker") if e.pool not in pools]
        if leaving:
            names = ", ".join(e.name for e in leaving)
            report("scale", f"stopping {names}: their pools are no longer declared")
            await asyncio.to_thread(self._stop_entries, leaving, self.grace)
            for entry in leaving:
                state.processes.remove(entry)
                state.wanted.pop(entry.pool, None)
            await self._save(state)

    async def _fresh_state(self) -> LocalState:
        if await asyncio.to_thread(_port_in_use, self.api_port):
            owner = await asyncio.to_thread(_port_owner, self.api_port)
            raise ClusterError(
                f"port {self.api_port} on 127.0.0.1 is already in use by {owner}: stop it, or "
                f"choose another port (mimir cluster up --port N)"
            )
        if self.external_redis_url:
            return LocalState(self.project, self.api_port, None, self.external_redis_url, False)
        port = await asyncio.to_thread(_free_port)
        await asyncio.to_thread(self._redis_secrets)  # the password, before anything starts
        return LocalState(
            self.project, self.api_port, port, f"redis://127.0.0.1:{port}/0", redis_auth=True
        )

    async def _ensure_core(
        self, state: LocalState, report: Progress, started: list[ProcessEntry]
    ) -> None:
        """Start redis and the backend unless they run."""
        alive = await self._alive(state.processes)
        if state.own_redis:
            redis = state.entry("redis")
            if redis is None or redis.pid not in alive:
                report("redis", f"starting redis-server on 127.0.0.1:{state.redis_port}")
                entry = await asyncio.to_thread(self._start_redis, state)
                await self._replace(state, redis, entry, started)
                assert state.redis_port is not None
                await self._wait_redis(entry, state.redis_port, 20.0, state.redis_auth)
        backend = state.entry("backend")
        if backend is None or backend.pid not in alive:
            report("backend", f"starting the API server on 127.0.0.1:{state.api_port}")
            entry = await asyncio.to_thread(self._start_backend, state)
            await self._replace(state, backend, entry, started)

    async def _replace(
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
        await self._save(state)

    async def _scale_workers(
        self,
        state: LocalState,
        pool: PoolSpec,
        workers: int,
        report: Progress,
        started: list[ProcessEntry],
    ) -> None:
        """Run exactly ``workers`` workers in ``pool``; the other pools' are left alone."""
        # Dead workers are replaced, not counted.
        alive = await self._alive(state.pool_entries(pool.name))
        for entry in state.pool_entries(pool.name):
            if entry.pid not in alive:
                report("worker", f"{entry.name} (pid {entry.pid}) is gone: removing its record")
                state.processes.remove(entry)
        state.wanted[pool.name] = workers
        current = {_number(e): e for e in state.pool_entries(pool.name)}
        plan = plan_scale(list(current), workers)
        if plan.stop:
            leaving = [current[n] for n in plan.stop]
            names = ", ".join(e.name for e in leaving)
            report("scale", f"stopping {names} (SIGTERM, {self.grace:.0f}s grace)")
            await asyncio.to_thread(self._stop_entries, leaving, self.grace)
            for entry in leaving:
                state.processes.remove(entry)
        await self._save(state)
        for number in plan.start:
            name = replica_name(pool.name, number)
            report("worker", f"starting {name}")
            entry = await asyncio.to_thread(self._start_worker, state, pool, number)
            await self._replace(state, None, entry, started)

    async def scale(
        self,
        workers: int,
        progress: Progress | None = None,
        *,
        pool: str = DEFAULT_POOL,
        wait: bool = True,
    ) -> ClusterStatus:
        """Run exactly ``workers`` workers in ``pool`` (stopping extra ones gracefully); the
        other pools are left alone. ``wait=False`` returns once the new workers are started,
        without waiting for their heartbeats (the autoscaler watches those itself)."""
        report = progress or _no_progress
        check_worker_count(workers, self.settings.limits)
        async with self._locked():
            state = await asyncio.to_thread(self._require_running)
            cluster = state.cluster_file
            if pool not in cluster.pools:
                raise unknown_pool(pool, cluster)
            spec = cluster.pools[pool]
            self._check_count(spec, workers)
            started: list[ProcessEntry] = []
            try:
                await self._scale_workers(state, spec, workers, report, started)
                if wait:
                    await self._wait_ready(state, report, {pool})
            except BaseException:
                await asyncio.to_thread(self._stop_entries, started, 5.0)
                state.processes = [e for e in state.processes if e not in started]
                await self._save(state)
                raise
        report("scale", f"{workers} worker(s) running in pool {pool!r}")
        return await self.status()

    def _require_running(self) -> LocalState:
        """The recorded state of a cluster whose server runs (blocking: call in a thread)."""
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
        if await self._down(report):
            report("down", f"cluster {self.project!r} stopped (data kept in {self.directory})")

    async def _down(self, report: Progress) -> bool:
        """Stop everything; False when no cluster was recorded."""
        async with self._locked():
            state = await self._load()
            if state is None:
                report("down", f"no local cluster {self.project!r} is recorded")
                return False
            for service in (PROMETHEUS, "worker", "backend", "redis"):
                entries = state.entries(service)
                alive = await self._alive(entries)
                if alive:
                    names = ", ".join(e.name for e in entries if e.pid in alive)
                    report("down", f"stopping {names}")
                    stopping = [e for e in entries if e.pid in alive]
                    await asyncio.to_thread(self._stop_entries, stopping, self.grace)
                for entry in entries:
                    state.processes.remove(entry)
                await self._save(state)
            await self._forget()
        return True

    async def clean(self, progress: Progress | None = None) -> None:
        """Stop everything like :meth:`down`, then remove the project's directory (Redis
        data, logs)."""
        report = progress or _no_progress
        if await self._down(report):
            report("down", f"cluster {self.project!r} stopped")
        if await asyncio.to_thread(self.directory.exists):
            await asyncio.to_thread(shutil.rmtree, self.directory, True)
            report("clean", f"removed {self.directory} (Redis data, logs and the project's files)")

    async def restart(self, service: str, progress: Progress | None = None) -> ClusterStatus:
        """Restart ``redis``, ``backend`` (or ``server``), ``worker`` (every pool's workers),
        ``worker-<pool>`` (one pool's), or one worker: ``worker-N``, ``worker-<pool>-N``."""
        report = progress or _no_progress
        name = canonical_service(service)
        async with self._locked():
            state = await self._load()
            if state is None:
                raise ClusterError(f"no local cluster {self.project!r} is running")
            self.api_port = state.api_port
            cluster = state.cluster_file
            target = parse_worker_name(name)
            if name in SERVICE_KINDS:
                targets = state.entries(name)
            elif target is not None and target[1] is None:
                pool = target[0]
                assert pool is not None
                if pool not in cluster.pools:
                    raise unknown_pool(pool, cluster)
                targets = state.pool_entries(pool)
            else:
                entry = state.entry(name)
                targets = [entry] if entry else []
            if not targets:
                known = ", ".join(
                    ["redis", "backend", "worker"]
                    + [pool_service(p) for p in cluster.pools if p != DEFAULT_POOL]
                    + [e.name for e in state.entries("worker")]
                )
                raise ClusterError(f"unknown service {service!r}; choose from {known}")
            report("restart", f"stopping {', '.join(e.name for e in targets)}")
            await asyncio.to_thread(self._stop_entries, targets, self.grace)
            started: list[ProcessEntry] = []
            for old in targets:
                report("restart", f"starting {old.name}")
                if old.service == "redis":
                    new = await asyncio.to_thread(self._start_redis, state)
                    await self._replace(state, old, new, started)
                    assert state.redis_port is not None
                    await self._wait_redis(new, state.redis_port, 20.0, state.redis_auth)
                elif old.service == "backend":
                    new = await asyncio.to_thread(self._start_backend, state)
                    await self._replace(state, old, new, started)
                elif old.service == PROMETHEUS:
                    assert state.prometheus_port is not None
                    new = await asyncio.to_thread(self._start_prometheus, state)
                    await self._replace(state, old, new, started)
                    await self._wait_prometheus(new, state.prometheus_port)
                else:
                    if old.pool not in cluster.pools:
                        raise unknown_pool(old.pool, cluster)
                    spec = cluster.pools[old.pool]
                    new = await asyncio.to_thread(self._start_worker, state, spec, _number(old))
                    await self._replace(state, old, new, started)
            await self._wait_ready(state, report)
        return await self.status()

    async def instances(self) -> list[Instance]:
        """Every recorded process, stale ones included (state ``stale``)."""
        state, alive = await asyncio.to_thread(self._snapshot)
        if state is None:
            return []
        out = []
        for entry in state.processes:
            running = entry.pid in alive
            out.append(
                Instance(
                    name=entry.name,
                    service=entry.service,
                    kind=_KINDS[entry.service],
                    state="running" if running else "stale",
                    ident=str(entry.pid),
                    detail=f"log {entry.log}" if running else "process gone; 'up' or 'down' clears",
                )
            )
        return out

    def _snapshot(self) -> tuple[LocalState | None, set[int]]:
        """The recorded state and which of its processes run (blocking: call in a thread)."""
        state = self.load_state()
        return state, (self.alive_pids(state.processes) if state else set())

    async def status(self) -> ClusterStatus:
        """State of redis, backend and the worker pool (stale entries show as ``stale``)."""
        state, alive_pids = await asyncio.to_thread(self._snapshot)
        if state is None:
            missing = [
                ServiceStatus(
                    name,
                    kind,
                    "missing",
                    replicas=0,
                    pool=DEFAULT_POOL if kind == "worker" else None,
                )
                for name, kind in SERVICE_KINDS.items()
            ]
            return ClusterStatus("local", self.project, missing, None)
        self.api_port = state.api_port
        async with await self._probe() as probe:
            ready = await probe.ready()
            registered = await probe.workers(self.worker_key) if ready else None
        services: list[ServiceStatus] = []
        redis = state.entry("redis")
        if state.own_redis:
            alive = redis is not None and redis.pid in alive_pids
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
        alive = backend is not None and backend.pid in alive_pids
        services.append(
            ServiceStatus(
                "backend",
                "server",
                "running" if alive else "stale",
                health=("healthy" if ready else "unhealthy") if alive else "",
                replicas=int(alive),
                ports={"8080/tcp": f"127.0.0.1:{state.api_port}"},
            )
        )
        cluster = state.cluster_file
        pools = list(cluster.pools)
        pools += sorted({e.pool for e in state.entries("worker")} - set(pools))
        for pool in pools:
            workers = state.pool_entries(pool)
            services.append(
                self._pool_status(pool, workers, alive_pids, registered, state.wanted.get(pool))
            )
        if state.prometheus_port is not None:
            monitor = state.entry(PROMETHEUS)
            up = monitor is not None and monitor.pid in alive_pids
            ready = up and await asyncio.to_thread(_answers_ready, state.prometheus_port)
            services.append(
                ServiceStatus(
                    PROMETHEUS,
                    "prometheus",
                    "running" if up else "stale" if monitor else "missing",
                    health=("healthy" if ready else "unhealthy") if up else "",
                    replicas=int(up),
                    ports={f"{PROMETHEUS_PORT}/tcp": f"127.0.0.1:{state.prometheus_port}"},
                )
            )
        api = self.api_url if alive else None
        return ClusterStatus("local", self.project, services, api)

    @staticmethod
    def _pool_status(
        pool: str,
        workers: list[ProcessEntry],
        alive_pids: set[int],
        registered: set[str] | None,
        wanted: int | None,
    ) -> ServiceStatus:
        """The status row of one pool's workers."""
        live = [e for e in workers if e.pid in alive_pids]
        if not workers:
            state, health = "stopped", ""
        elif not live:
            state, health = "stale", ""
        else:
            state = "running"
            if len(live) < len(workers):
                health = "unhealthy"
            else:
                health = worker_health_of({str(e.pid) for e in live}, registered)
        return ServiceStatus(
            pool_service(pool), "worker", state, health, replicas=len(live), pool=pool,
            wanted=len(workers) if wanted is None else wanted,
        )  # fmt: skip

    async def cluster_file(self) -> ClusterFile | None:
        """The pools of the recorded cluster (``None`` when none is recorded)."""
        state = await self._load()
        return state.cluster_file if state is not None else None

    async def logs(
        self, services: list[str] | None = None, follow: bool = False, tail: int = 100
    ) -> AsyncIterator[LogLine]:
        """The last ``tail`` lines of each selected process's log, then (``follow``) new lines
        as they are written, including those of workers started meanwhile, until the cluster
        is taken down."""
        state = await self._load()
        if state is None:
            raise ClusterError(f"no local cluster {self.project!r} is recorded")
        wanted = {canonical_service(s) for s in services or []}
        pool_names = {pool_service(p) for p in state.cluster_file.pools}
        names = {e.name for e in state.processes} | set(SERVICE_KINDS) | pool_names
        unknown = wanted - names
        if unknown:
            raise ClusterError(
                f"unknown service(s) {', '.join(sorted(unknown))}; choose from "
                f"{', '.join(sorted(names))}"
            )

        def selected(entry: ProcessEntry) -> bool:
            if not wanted or entry.service in wanted or entry.name in wanted:
                return True
            return entry.service == "worker" and pool_service(entry.pool) in wanted

        positions: dict[str, int] = {}
        partial: dict[str, str] = {}
        for entry in state.processes:
            if not selected(entry):
                continue
            path = Path(entry.log)
            lines, size = await asyncio.to_thread(_tail_and_size, path, tail)
            for line in lines:
                yield LogLine(entry.name, line)
            positions[entry.log] = size
        if not follow:
            return
        known = {e.name: e for e in state.processes if selected(e)}
        last_scan = time.monotonic()
        gone = False
        while True:
            if time.monotonic() - last_scan > 1.0:
                last_scan = time.monotonic()
                fresh = await self._load()
                # `down` removes the record: print what was written until then, and end.
                gone = fresh is None
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
            if gone and not got_any:
                for log, rest in partial.items():
                    name = next((e.name for e in known.values() if e.log == log), log)
                    yield LogLine(name, rest, time.time())
                return
            if not got_any:
                await asyncio.sleep(0.2)

    async def stats(self) -> list[ServiceStats]:
        """CPU % (over a 0.5 s sample) and resident memory of each live process."""
        state, alive = await asyncio.to_thread(self._snapshot)
        if state is None:
            return []
        live = [e for e in state.processes if e.pid in alive]
        return await asyncio.to_thread(_sample_stats, live, 0.5)

    async def build(self, progress: Progress | None = None) -> None:
        """Nothing to build: local processes run the installed package."""
        (progress or _no_progress)("build", "the local backend runs the installed package")


def _dump(cluster: ClusterFile) -> dict[str, object]:
    return cluster.model_dump(mode="json", exclude_none=True)


def _number(entry: ProcessEntry) -> int:
    """The replica number of ``worker-N`` or ``worker-<pool>-N``."""
    return int(entry.name.rsplit("-", 1)[1])


def _tail_and_size(path: Path, count: int) -> tuple[list[str], int]:
    lines = tail_lines(path, count)
    try:
        return lines, path.stat().st_size
    except FileNotFoundError:
        return lines, 0


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
        out.append(ServiceStats(entry.name, _KINDS[entry.service], round(cpu, 1), rss))
    return out
