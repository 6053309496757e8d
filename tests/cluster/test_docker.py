"""The Docker backend against a real engine (started by scripts/system-deps.sh in CI).

One cluster per module, built once: build, up 2 workers, 50 jobs, scale 5 and 1, logs,
stats, down (volumes kept, data survives), clean; the compose file with --scale worker=3.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from mimir.app.cluster.base import ClusterError, ClusterStatus, LogLine
from mimir.app.cluster.cli import main as cluster_main
from mimir.app.cluster.docker_backend import DockerBackend
from mimir.app.cluster.selection import docker_engine_answers
from mimir.app.cluster.topology import FALLBACK_REDIS_IMAGE, IMAGES, Topology
from tests.cluster.conftest import ClusterAPI
from tests.helpers import free_port, wait_until

pytestmark = [
    pytest.mark.docker,
    pytest.mark.skipif(not docker_engine_answers(), reason="no Docker engine answers"),
]

PROJECT = "mimirtest"
PACKAGING = Path(__file__).resolve().parents[2] / "packaging"


def _service(status: ClusterStatus, name: str):  # type: ignore[no-untyped-def]
    return next(s for s in status.services if s.name == name)


@pytest.fixture(scope="module")
def build_messages() -> list[tuple[str, str]]:
    messages: list[tuple[str, str]] = []
    asyncio.run(DockerBackend(PROJECT).build(lambda s, m: messages.append((s, m))))
    return messages


@pytest.fixture(scope="module")
def backend(build_messages: list[tuple[str, str]]) -> Iterator[DockerBackend]:
    cluster = DockerBackend(
        PROJECT, api_port=free_port(), worker_concurrency=2, grace=15, start_timeout=120
    )
    asyncio.run(cluster.clean())  # leftovers of an interrupted run
    asyncio.run(cluster.up(2))
    try:
        yield cluster
    finally:
        asyncio.run(cluster.clean())
        cluster.close()


@pytest.fixture(scope="module")
def api(backend: DockerBackend) -> Iterator[ClusterAPI]:
    client = ClusterAPI(backend.api_url)
    yield client
    client.close()


def _worker_hosts(api: ClusterAPI) -> set[str]:
    return {w["hostname"] for w in api.workers()}


def test_build_streams_progress_from_the_engine(build_messages: list[tuple[str, str]]) -> None:
    text = [m for _, m in build_messages]
    assert any(m.startswith("backend: Step 1/") for m in text)
    assert any(m.startswith("worker: Step ") for m in text)
    assert any("wheelhouse" in m for m in text)


def test_up_runs_redis_backend_and_two_registered_workers(
    backend: DockerBackend, api: ClusterAPI
) -> None:
    # `up` waits for the API and the workers; Redis's own Docker healthcheck runs every 5 s,
    # so its first verdict may still be pending ("starting") when `up` returns.
    def redis_healthy() -> ClusterStatus | None:
        status = asyncio.run(backend.status())
        return status if _service(status, "redis").health == "healthy" else None

    status = wait_until(
        redis_healthy,
        timeout=30,
        interval=0.5,
        message="Redis's healthcheck to report healthy",
    )
    assert status.backend == "docker" and status.api_url == backend.api_url
    assert _service(status, "backend").ports == {"8080/tcp": f"127.0.0.1:{backend.api_port}"}
    assert (_service(status, "worker").replicas, _service(status, "worker").health) == (
        2,
        "healthy",
    )
    assert _worker_hosts(api) == {f"{PROJECT}-worker-1", f"{PROJECT}-worker-2"}
    containers = backend._containers()
    assert {c.labels["io.mimir.project"] for c in containers} == {PROJECT}
    worker = next(c for c in containers if c.name == f"{PROJECT}-worker-1")
    host_config = worker.attrs["HostConfig"]
    assert (host_config["NanoCpus"], host_config["Memory"]) == (500_000_000, 512 * 1024**2)


def test_fifty_jobs_through_the_api_succeed(api: ClusterAPI) -> None:
    records = api.wait_finished(api.enqueue(50), timeout=120)
    assert {r["status"] for r in records.values()} == {"succeeded"}


def test_scale_to_five_spreads_jobs_then_to_one_without_losing_any(
    backend: DockerBackend, api: ClusterAPI
) -> None:
    status = asyncio.run(backend.scale(5))
    assert _service(status, "worker").replicas == 5
    assert _worker_hosts(api) >= {f"{PROJECT}-worker-{n}" for n in range(1, 6)}
    records = api.wait_finished(api.enqueue(50, seconds=0.2), timeout=120)
    assert {r["status"] for r in records.values()} == {"succeeded"}
    assert len({r["worker_id"] for r in records.values()}) >= 3
    ids = api.enqueue(30, seconds=0.5)
    status = asyncio.run(backend.scale(1))
    assert _service(status, "worker").replicas == 1
    records = api.wait_finished(ids, timeout=180)
    assert {r["status"] for r in records.values()} == {"succeeded"}
    wait_until(lambda: _worker_hosts(api) == {f"{PROJECT}-worker-1"}, timeout=30)


def test_logs_and_stats_return_real_data(backend: DockerBackend) -> None:
    async def collect() -> list[LogLine]:
        return [line async for line in backend.logs(["backend", "redis"], tail=20)]

    lines = asyncio.run(collect())
    assert {line.service for line in lines} == {"backend", "redis"}
    assert all(line.timestamp for line in lines)
    assert [line.timestamp for line in lines] == sorted(line.timestamp or 0 for line in lines)
    stats = {s.name: s for s in asyncio.run(backend.stats())}
    assert set(stats) == {f"{PROJECT}-redis", f"{PROJECT}-backend", f"{PROJECT}-worker-1"}
    backend_stats = stats[f"{PROJECT}-backend"]
    assert backend_stats.memory_bytes > 10 * 1024 * 1024
    assert backend_stats.memory_limit_bytes == 1024**3
    assert backend_stats.net_rx_bytes > 0


def test_a_new_backend_instance_finds_the_cluster(backend: DockerBackend, capsys) -> None:  # type: ignore[no-untyped-def]
    other = DockerBackend(PROJECT)  # default port 8080: it takes the real one from the engine
    status = asyncio.run(other.status())
    assert status.api_url == backend.api_url
    names = {i.name for i in asyncio.run(other.instances())}
    assert {f"{PROJECT}-redis", f"{PROJECT}-backend", f"{PROJECT}-worker-1"} <= names
    assert cluster_main(["status", "--backend", "docker", "--project", PROJECT]) == 0
    out = capsys.readouterr().out
    assert f"cluster '{PROJECT}' (docker)  API: {backend.api_url}" in out


def test_restart_backend_keeps_the_cluster_serving(backend: DockerBackend, api: ClusterAPI) -> None:
    before = {c.name: c.attrs["State"]["StartedAt"] for c in backend._containers()}
    status = asyncio.run(backend.restart("backend"))
    after = {c.name: c.attrs["State"]["StartedAt"] for c in backend._containers()}
    assert after[f"{PROJECT}-backend"] != before[f"{PROJECT}-backend"]
    assert after[f"{PROJECT}-redis"] == before[f"{PROJECT}-redis"]
    assert _service(status, "backend").health in ("healthy", "starting")
    records = api.wait_finished(api.enqueue(3), timeout=60)
    assert {r["status"] for r in records.values()} == {"succeeded"}


def test_down_keeps_volumes_and_data_then_clean_removes_them(
    backend: DockerBackend, api: ClusterAPI
) -> None:
    [job_id] = api.enqueue(1)
    api.wait_finished([job_id])
    asyncio.run(backend.down())
    assert backend._containers() == []
    volumes = {v.name for v in backend._project_volumes()}
    assert f"{PROJECT}_redis_data" in volumes and len(volumes) == 7
    asyncio.run(backend.up(1))
    assert api.job(job_id)["status"] == "succeeded"  # Redis's AOF lived in its volume
    asyncio.run(backend.clean())
    assert backend._project_volumes() == [] and backend._containers() == []


def test_a_taken_port_is_reported(build_messages: list[tuple[str, str]]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        cluster = DockerBackend(f"{PROJECT}-port", api_port=port, start_timeout=30)
        try:
            with pytest.raises(ClusterError, match=f"port {port} on 127.0.0.1 is already in use"):
                asyncio.run(cluster.up(1))
        finally:
            asyncio.run(cluster.clean())


def test_a_missing_image_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(IMAGES, "backend", "mimir-aip:no-such-image")
    with pytest.raises(ClusterError, match="image missing: mimir-aip:no-such-image"):
        asyncio.run(DockerBackend(f"{PROJECT}-img").up(1))


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose missing")
def test_compose_file_scales_workers_and_runs_jobs(build_messages: list[tuple[str, str]]) -> None:
    port = free_port()
    env = {
        **os.environ,
        "MIMIR_PORT": str(port),
        "MIMIR_PROJECT": "mimircompose",
        "REDIS_IMAGE": FALLBACK_REDIS_IMAGE,
    }
    compose = ["docker-compose", "-p", "mimircompose", "-f", "docker-compose.distributed.yml"]

    def run(*args: str) -> None:
        result = subprocess.run(
            [*compose, *args], cwd=PACKAGING, env=env, capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, result.stderr[-2000:]

    run("up", "-d", "--no-build", "--scale", "worker=3")
    try:
        api = ClusterAPI(f"http://127.0.0.1:{port}")
        wait_until(lambda: _alive(api) and len(_worker_hosts(api)) == 3, timeout=90)
        records = api.wait_finished(api.enqueue(10), timeout=60)
        assert {r["status"] for r in records.values()} == {"succeeded"}
        status = asyncio.run(DockerBackend("mimircompose").status())  # labels agree
        assert _service(status, "worker").replicas == 3
        api.close()
    finally:
        run("down", "-v", "--timeout", "5")


def _alive(api: ClusterAPI) -> bool:
    try:
        return api.client.get("/health").status_code == 200
    except Exception:
        return False


class _BrokenWorkers(DockerBackend):
    """Workers that exit at once (concurrency 0 is refused), as a bad image would."""

    def topology(self, workers: int, redis_image: str | None = None) -> Topology:
        topology = super().topology(workers, redis_image)
        worker = topology.services["worker"]
        topology.services["worker"] = replace(
            worker, command=[*worker.command, "--concurrency", "0"]
        )
        return topology


def test_a_failing_container_is_named_with_its_last_log_lines(
    build_messages: list[tuple[str, str]],
) -> None:
    cluster = _BrokenWorkers(f"{PROJECT}-bad", api_port=free_port(), start_timeout=60)
    try:
        with pytest.raises(ClusterError, match=f"container {PROJECT}-bad-worker-1") as caught:
            asyncio.run(cluster.up(1))
        assert "--concurrency must be at least 1" in caught.value.detail
    finally:
        asyncio.run(cluster.clean())


def test_unified_image_runs_redis_server_and_workers_under_its_supervisor(
    build_messages: list[tuple[str, str]],
) -> None:
    builder = DockerBackend(f"{PROJECT}-unified")
    asyncio.run(builder.build_unified())
    client = builder._connect()
    port = free_port()
    container = client.containers.run(
        IMAGES["unified"],
        detach=True,
        name=f"{PROJECT}-unified",
        environment={"WORKERS": "2", "GRACE": "10"},
        ports={"8080/tcp": ("127.0.0.1", port)},
        labels={"io.mimir.project": f"{PROJECT}-unified"},
    )
    try:
        api = ClusterAPI(f"http://127.0.0.1:{port}")
        wait_until(lambda: _alive(api) and len(api.workers()) == 2, timeout=90)
        records = api.wait_finished(api.enqueue(10), timeout=60)
        assert {r["status"] for r in records.values()} == {"succeeded"}
        api.close()
        container.stop(timeout=30)  # SIGTERM: workers, server, redis stop in turn
        container.reload()
        assert container.attrs["State"]["ExitCode"] == 0
        logs = container.logs().decode()
        assert "supervise: stopping workers, server, redis" in logs and "worker-2 | " in logs
    finally:
        container.remove(force=True)
