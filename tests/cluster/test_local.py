"""The local-process backend, end to end: real redis-server, server and worker processes."""

from __future__ import annotations

import asyncio
import fcntl
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from mimir.app.cluster import local as local_module
from mimir.app.cluster.base import ClusterError, ClusterStatus, LogLine
from mimir.app.cluster.cli import main as cluster_main
from mimir.app.cluster.local import LocalBackend
from mimir.core.settings import Settings
from tests.cluster.conftest import ClusterAPI, cluster_env
from tests.helpers import free_port, wait_until

pytestmark = pytest.mark.slow


def _settings(root: Path) -> Settings:
    return Settings.from_env(cluster_env(root))


def _service(status: ClusterStatus, name: str):  # type: ignore[no-untyped-def]
    return next(s for s in status.services if s.name == name)


class Recorder:
    def __init__(self) -> None:
        self.messages: list[tuple[str, str]] = []

    def __call__(self, step: str, message: str) -> None:
        self.messages.append((step, message))


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("local-cluster")


@pytest.fixture(scope="module")
def backend(root: Path) -> Iterator[LocalBackend]:
    """A two-worker local cluster, shared by this module's tests (in file order)."""
    cluster = LocalBackend(
        "citest", _settings(root), api_port=free_port(), grace=15, start_timeout=60
    )
    progress = Recorder()
    asyncio.run(cluster.up(2, progress))
    cluster.progress = progress  # type: ignore[attr-defined]
    try:
        yield cluster
    finally:
        asyncio.run(cluster.clean())


def _worker_pids(backend: LocalBackend) -> set[int]:
    state = backend.load_state()
    assert state is not None
    return {e.pid for e in state.entries("worker")}


def test_up_starts_redis_server_and_registered_workers(
    backend: LocalBackend, api: ClusterAPI
) -> None:
    status = asyncio.run(backend.status())
    assert status.backend == "local" and status.running
    assert status.api_url == backend.api_url
    assert _service(status, "redis").state == "running"
    assert (_service(status, "backend").state, _service(status, "backend").health) == (
        "running",
        "healthy",
    )
    workers = _service(status, "worker")
    assert (workers.state, workers.replicas, workers.health) == ("running", 2, "healthy")
    assert {w["pid"] for w in api.workers()} >= _worker_pids(backend)
    steps = [step for step, _ in backend.progress.messages]  # type: ignore[attr-defined]
    assert steps[:2] == ["redis", "backend"] and "health" in steps and "workers" in steps


def test_processes_outlive_their_starter_in_own_sessions(backend: LocalBackend) -> None:
    state = backend.load_state()
    assert state is not None
    for entry in state.processes:
        assert os.getsid(entry.pid) == entry.pid != os.getsid(0)


def test_redis_requires_the_generated_password_kept_out_of_argv_and_state(
    backend: LocalBackend,
) -> None:
    import redis

    state = backend.load_state()
    assert state is not None and state.redis_auth and state.redis_port is not None
    secrets = backend.secrets_dir
    assert secrets.stat().st_mode & 0o777 == 0o700
    for name in ("redis-password", "redis.conf"):
        assert (secrets / name).stat().st_mode & 0o777 == 0o600
    password = (secrets / "redis-password").read_text().strip()
    with pytest.raises(redis.exceptions.AuthenticationError):  # NOAUTH
        redis.Redis(port=state.redis_port, socket_timeout=5).ping()
    with redis.Redis(port=state.redis_port, password=password, socket_timeout=5) as client:
        assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
        assert client.config_get("maxmemory") == {"maxmemory": str(1024**3)}
        assert client.config_get("protected-mode") == {"protected-mode": "yes"}
    assert password not in backend.state_path.read_text()
    for entry in state.processes:
        process = psutil.Process(entry.pid)
        assert password not in " ".join(process.cmdline())
        if entry.service != "redis":
            wanted = str(secrets / "redis-password")
            assert process.environ()["MIMIR_REDIS_PASSWORD_FILE"] == wanted
            assert password not in str(process.environ())
    # `up` says which file to export for a worker or enqueue run by hand (its path only).
    said = [text for _, text in backend.progress.messages]  # type: ignore[attr-defined]
    assert any(f"MIMIR_REDIS_PASSWORD_FILE={secrets / 'redis-password'}" in t for t in said)
    assert not any(password in text for text in said)


def test_jobs_enqueued_through_the_api_succeed(api: ClusterAPI) -> None:
    records = api.wait_finished(api.enqueue(20), timeout=60)
    assert {r["status"] for r in records.values()} == {"succeeded"}


def test_scale_up_then_down_without_losing_jobs(backend: LocalBackend, api: ClusterAPI) -> None:
    ids = api.enqueue(40, seconds=0.3)
    status = asyncio.run(backend.scale(4))
    assert _service(status, "worker").replicas == 4
    assert len(_worker_pids(backend)) == 4
    registered = {w["pid"] for w in api.workers()}
    assert _worker_pids(backend) <= registered
    # Scale down while jobs are still queued or running: they must all finish anyway. The
    # first batch may be done by now (scale-up takes seconds on a loaded machine): this one
    # is in the queue when the scale-down starts.
    ids += api.enqueue(16, seconds=0.5)
    assert any(api.job(i)["status"] in ("queued", "running") for i in ids)
    progress = Recorder()
    status = asyncio.run(backend.scale(1, progress))
    assert _service(status, "worker").replicas == 1
    assert any("SIGTERM" in message for _, message in progress.messages)
    records = api.wait_finished(ids, timeout=90)
    assert {r["status"] for r in records.values()} == {"succeeded"}
    assert len({r["worker_id"] for r in records.values()}) >= 2  # jobs spread over workers


def test_a_shorter_grace_at_scale_down_still_hands_the_jobs_back(
    backend: LocalBackend, root: Path, api: ClusterAPI
) -> None:
    # The workers were started with the fixture's grace (15 s, so their own is 10 s); a stop
    # with 3 s must make them hand back their jobs before the SIGKILL, not leave them to
    # wait out the 30 s lease.
    asyncio.run(backend.scale(2))
    state = backend.load_state()
    assert state is not None
    leaving = state.entry("worker-2")
    assert leaving is not None
    ids = api.enqueue(4, seconds=60)  # two for each worker (concurrency 2)
    wait_until(
        lambda: {api.job(i)["status"] for i in ids} == {"running"},
        timeout=20,
        message="all four jobs running",
    )
    on_leaving = [i for i in ids if api.job(i)["worker_id"].endswith(f"-{leaving.pid}")]
    assert len(on_leaving) == 2
    started = time.monotonic()
    asyncio.run(LocalBackend("citest", _settings(root), grace=3).scale(1))
    assert time.monotonic() - started < 10
    try:
        # Handed back (worker-1 is busy, so they wait in the queue), not left "running".
        assert {api.job(i)["status"] for i in on_leaving} == {"queued"}
        assert "handing 2 running jobs back" in Path(leaving.log).read_text()
    finally:
        for job_id in ids:
            api.cancel(job_id)
        api.wait_finished(ids, timeout=30)


def test_logs_show_real_lines_of_each_service(backend: LocalBackend) -> None:
    async def collect() -> list[LogLine]:
        return [line async for line in backend.logs(tail=5000)]

    lines = asyncio.run(collect())
    services = {line.service for line in lines}
    assert {"redis", "backend", "worker-1"} <= services
    assert any("Mimir API listening" in line.line for line in lines if line.service == "backend")
    assert any(
        "Ready to accept connections" in line.line for line in lines if line.service == "redis"
    )


def test_logs_follow_picks_up_a_worker_started_meanwhile(backend: LocalBackend) -> None:
    async def scenario() -> list[LogLine]:
        seen: list[LogLine] = []

        async def follow() -> None:
            async for line in backend.logs(["worker"], follow=True, tail=0):
                seen.append(line)
                if line.service == "worker-2" and "serving" in line.line:
                    return

        task = asyncio.create_task(follow())
        await backend.scale(2)
        await asyncio.wait_for(task, timeout=30)
        return seen

    seen = asyncio.run(scenario())
    assert any(line.service == "worker-2" for line in seen)


def test_stats_measure_each_process(backend: LocalBackend) -> None:
    stats = {s.name: s for s in asyncio.run(backend.stats())}
    assert {"redis", "backend", "worker-1"} <= set(stats)
    assert stats["backend"].memory_bytes > 20 * 1024 * 1024
    assert stats["backend"].kind == "server" and stats["redis"].kind == "redis"
    assert all(s.cpu_percent >= 0 for s in stats.values())


def test_a_new_backend_instance_finds_the_running_cluster(
    backend: LocalBackend, root: Path
) -> None:
    other = LocalBackend("citest", _settings(root))  # no port given: found in the state file
    status = asyncio.run(other.status())
    assert status.running and status.api_url == backend.api_url
    names = [i.name for i in asyncio.run(other.instances())]
    assert names[:2] == ["redis", "backend"] and "worker-1" in names


def test_a_dead_worker_is_noticed_as_stale_and_replaced(
    backend: LocalBackend, root: Path, api: ClusterAPI
) -> None:
    other = LocalBackend("citest", _settings(root), grace=15)
    victim = max(_worker_pids(backend))
    os.kill(victim, signal.SIGKILL)
    wait_until(
        lambda: (
            not psutil.pid_exists(victim) or psutil.Process(victim).status() == psutil.STATUS_ZOMBIE
        ),
        timeout=10,
        message="killed worker gone",
    )
    stale = [i for i in asyncio.run(other.instances()) if i.state == "stale"]
    assert [i.ident for i in stale] == [str(victim)]
    assert _service(asyncio.run(other.status()), "worker").health == "unhealthy"
    status = asyncio.run(other.up(2))
    assert _service(status, "worker").replicas == 2
    assert victim not in _worker_pids(other)
    assert not [i for i in asyncio.run(other.instances()) if i.state == "stale"]


def test_restart_gives_a_service_a_new_process(backend: LocalBackend, api: ClusterAPI) -> None:
    state = backend.load_state()
    assert state is not None
    old_server, old_worker = state.entry("backend"), state.entry("worker-1")
    assert old_server is not None and old_worker is not None
    asyncio.run(backend.restart("worker-1"))
    status = asyncio.run(backend.restart("server"))
    state = backend.load_state()
    assert state is not None
    assert state.entry("worker-1").pid != old_worker.pid  # type: ignore[union-attr]
    assert state.entry("backend").pid != old_server.pid  # type: ignore[union-attr]
    assert _service(status, "backend").health == "healthy"
    assert state.entry("worker-1").pid in {w["pid"] for w in api.workers()}  # type: ignore[union-attr]


def test_up_with_another_port_on_a_running_cluster_is_refused(
    backend: LocalBackend, root: Path
) -> None:
    other = LocalBackend("citest", _settings(root), api_port=free_port())
    with pytest.raises(ClusterError, match=f"already runs with its API on port {backend.api_port}"):
        asyncio.run(other.up(2))
    assert asyncio.run(backend.status()).running


def test_worker_counts_past_the_limit_are_refused_before_anything_starts(
    backend: LocalBackend, root: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:  # type: ignore[no-untyped-def]
    before = backend.load_state()
    with pytest.raises(
        ClusterError, match=r"refusing 1000 workers: .* at most 64 .*MIMIR_MAX_WORKERS"
    ):
        asyncio.run(backend.scale(1000))
    fresh = LocalBackend("capped", _settings(root), api_port=free_port())
    with pytest.raises(ClusterError, match="refusing 65 workers"):
        asyncio.run(fresh.up(65))
    assert fresh.load_state() is None and not fresh.logs_dir.exists()
    monkeypatch.setenv("MIMIR_STATE_DIR", str(root / "state"))
    monkeypatch.setenv("MIMIR_MAX_WORKERS", "3")
    assert cluster_main(["scale", "4", "--backend", "local", "--project", "citest"]) == 1
    assert "refusing 4 workers: a cluster runs at most 3" in capsys.readouterr().err
    assert backend.load_state() == before


def test_the_event_loop_never_blocks_on_the_lock_state_or_processes(
    backend: LocalBackend, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = LocalBackend("citest", _settings(root))
    held, release = threading.Event(), threading.Event()

    def hold_lock() -> None:  # another command changing the project
        with (other.directory / ".lock").open("w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            held.set()
            release.wait(timeout=5)  # a blocked loop cannot release it: then it ends itself
            fcntl.flock(handle, fcntl.LOCK_UN)

    blocking_calls_on_loop: list[str] = []
    calls: list[str] = []
    real_read, real_alive = local_module.read_state, LocalBackend.is_alive

    def note(name: str) -> None:
        calls.append(name)
        if threading.get_ident() == loop_thread:
            blocking_calls_on_loop.append(name)

    def read_state(path: Path):  # type: ignore[no-untyped-def]
        note("read_state")
        return real_read(path)

    def is_alive(self: LocalBackend, entry):  # type: ignore[no-untyped-def]
        note("is_alive")
        return real_alive(self, entry)

    monkeypatch.setattr(local_module, "read_state", read_state)
    monkeypatch.setattr(LocalBackend, "is_alive", is_alive)
    loop_thread = threading.get_ident()  # asyncio.run runs the loop in this thread

    async def scenario() -> list[float]:
        lags: list[float] = []
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                before = time.monotonic()
                await asyncio.sleep(0.01)
                lags.append(time.monotonic() - before - 0.01)
                ticks += 1

        tick = asyncio.create_task(ticker())
        thread = threading.Thread(target=hold_lock, daemon=True)
        thread.start()
        await asyncio.to_thread(held.wait, 5)
        scaling = asyncio.create_task(other.scale(2))
        while ticks < 30 and not scaling.done():  # the loop turns while scale waits
            await asyncio.sleep(0.01)
        assert not scaling.done()
        release.set()
        await scaling
        await other.status()
        await other.instances()
        await other.stats()
        assert [line async for line in other.logs(["redis"], tail=1)]
        tick.cancel()
        await asyncio.to_thread(thread.join, 5)
        return lags

    lags = asyncio.run(scenario())
    assert max(lags) < 0.5, f"the loop stalled for {max(lags):.2f}s"
    assert {"read_state", "is_alive"} <= set(calls)
    assert blocking_calls_on_loop == []


def test_cli_reports_status_ps_and_operator_errors(
    backend: LocalBackend, root: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("MIMIR_STATE_DIR", str(root / "state"))
    assert cluster_main(["status", "--project", "citest"]) == 0  # finds local by state file
    out = capsys.readouterr().out
    assert "cluster 'citest' (local)" in out and backend.api_url in out
    assert cluster_main(["ps", "--backend", "local", "--project", "citest"]) == 0
    assert "worker-1" in capsys.readouterr().out
    assert cluster_main(["scale", "3", "--backend", "local", "--project", "nothing"]) == 1
    err = capsys.readouterr().err
    assert "no local cluster 'nothing' is running" in err
    for follow in ([], ["-f"]):  # nothing to show is an error, and -f does not hang
        assert cluster_main(["logs", *follow, "--backend", "local", "--project", "nothing"]) == 1
        assert "no local cluster 'nothing' is recorded" in capsys.readouterr().err
    assert cluster_main(["restart", "frontend", "--backend", "local", "--project", "citest"]) == 1
    assert "unknown service 'frontend'" in capsys.readouterr().err


def test_up_on_a_taken_port_fails_clearly(root: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        cluster = LocalBackend("porttest", _settings(root), api_port=port)
        with pytest.raises(ClusterError, match=f"port {port} on 127.0.0.1 is already in use"):
            asyncio.run(cluster.up(1))
    assert cluster.load_state() is None


def test_down_keeps_the_data_and_clean_removes_it(backend: LocalBackend, api: ClusterAPI) -> None:
    [job_id] = api.enqueue(1)
    api.wait_finished([job_id])
    state = backend.load_state()
    assert state is not None
    pids = [e.pid for e in state.processes]

    async def follow_through_down() -> None:
        async def follow() -> None:
            async for _line in backend.logs(["backend"], follow=True, tail=0):
                pass

        task = asyncio.create_task(follow())
        await backend.down()
        await asyncio.wait_for(task, timeout=10)  # `logs -f` ends once the cluster is down

    asyncio.run(follow_through_down())
    assert not any(psutil.pid_exists(pid) for pid in pids)
    assert backend.load_state() is None
    assert not asyncio.run(backend.status()).running
    asyncio.run(backend.up(1))  # same Redis data directory: the job record survived
    assert api.job(job_id)["status"] == "succeeded"
    progress = Recorder()
    asyncio.run(backend.clean(progress))
    assert not backend.directory.exists()
    said = " / ".join(message for _, message in progress.messages)
    assert "kept" not in said and f"removed {backend.directory}" in said


def test_a_failing_start_names_the_process_and_shows_its_last_lines(root: Path) -> None:
    settings = _settings(root / "broken").with_(worker_concurrency=0)  # the worker refuses 0
    cluster = LocalBackend("broken", settings, api_port=free_port(), start_timeout=60)
    with pytest.raises(ClusterError, match="worker-1 exited while starting") as caught:
        asyncio.run(cluster.up(1))
    assert "worker-1 | " in caught.value.detail
    assert "--concurrency must be at least 1" in caught.value.detail
    assert cluster.load_state() is None  # what had started was stopped again
    assert not asyncio.run(cluster.status()).running
