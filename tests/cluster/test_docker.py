"""The Docker backend against a real engine (started by scripts/system-deps.sh in CI).

One cluster per module, built once: build, up 2 workers, 50 jobs, scale 5 and 1, a stop
with a shorter grace, logs, stats, a killed Redis, down (volumes kept, data survives),
clean; the compose file with --scale worker=3, as another project, scaled by the backend.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import docker.errors
import httpx
import pytest

from mimir.app.cluster import docker_images
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
    # No pool is autoscaled: the API server gets no access to the engine.
    server = next(c for c in containers if c.name == f"{PROJECT}-backend")
    assert not [m for m in server.attrs["Mounts"] if m["Type"] == "bind"]
    assert not [e for e in server.attrs["Config"]["Env"] if e.startswith("DOCKER_HOST=")]


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


def test_a_shorter_grace_at_scale_down_still_hands_the_jobs_back(
    backend: DockerBackend, api: ClusterAPI
) -> None:
    # The workers were started with a 15 s grace (their own: 10 s); a stop with 4 s must
    # make them hand back their jobs before the SIGKILL, not leave them to the 30 s lease.
    asyncio.run(backend.scale(2))
    ids = api.enqueue(4, seconds=60)  # two for each worker (concurrency 2)
    wait_until(
        lambda: {api.job(i)["status"] for i in ids} == {"running"},
        timeout=30,
        message="all four jobs running",
    )
    leaving = [i for i in ids if f"-{PROJECT}-worker-2-" in api.job(i)["worker_id"]]
    assert len(leaving) == 2
    started = time.monotonic()
    asyncio.run(DockerBackend(PROJECT, grace=4).scale(1))
    assert time.monotonic() - started < 30
    try:
        assert {api.job(i)["status"] for i in leaving} == {"queued"}  # worker-1 is busy
    finally:
        for job_id in ids:
            api.cancel(job_id)
        api.wait_finished(ids, timeout=60)


def test_worker_counts_past_the_limit_are_refused_and_zero_workers_are_stopped(
    backend: DockerBackend, capsys
) -> None:  # type: ignore[no-untyped-def]
    before = {c.name for c in backend._containers()}
    with pytest.raises(ClusterError, match="refusing 1000 workers: a cluster runs at most 64"):
        asyncio.run(backend.scale(1000))
    assert cluster_main(["up", "--workers", "65", "--backend", "docker", "--project", PROJECT]) == 1
    assert "refusing 65 workers" in capsys.readouterr().err
    assert {c.name for c in backend._containers()} == before
    status = asyncio.run(backend.scale(0))
    assert (_service(status, "worker").state, _service(status, "worker").replicas) == (
        "stopped",
        0,
    )
    asyncio.run(backend.scale(1))


def test_up_with_another_port_on_a_running_cluster_is_refused(backend: DockerBackend) -> None:
    other = DockerBackend(PROJECT, api_port=free_port())
    with pytest.raises(ClusterError, match=f"already runs with its API on port {backend.api_port}"):
        asyncio.run(other.up(1))
    assert asyncio.run(backend.status()).api_url == backend.api_url


def test_logs_go_to_the_log_volumes(backend: DockerBackend) -> None:
    containers = {c.labels["io.mimir.service"]: c for c in backend._containers()}
    for service, prefix in (("backend", "server-"), ("worker", "worker-")):
        listing = containers[service].exec_run(["ls", "/app/logs"]).output.decode()
        assert prefix in listing, (service, listing)


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


def test_a_killed_redis_makes_the_backend_unhealthy_and_up_restarts_it(
    backend: DockerBackend, api: ClusterAPI
) -> None:
    [redis] = backend._containers("redis")
    redis.kill()  # Docker counts this as a deliberate stop: no restart policy applies
    with httpx.Client(base_url=backend.api_url, timeout=10) as client:
        wait_until(lambda: client.get("/ready").status_code == 503, timeout=20)
        assert client.get("/health").json()["redis"] == "unavailable"  # liveness stays 200

    def backend_unhealthy() -> ClusterStatus | None:
        status = asyncio.run(backend.status())
        return status if _service(status, "backend").health == "unhealthy" else None

    status = wait_until(backend_unhealthy, timeout=60, interval=0.5, message="unhealthy backend")
    assert _service(status, "redis").state == "exited"
    status = asyncio.run(backend.up(1))  # completes the cluster: a new Redis, same volume
    assert _service(status, "redis").state == "running"
    records = api.wait_finished(api.enqueue(3), timeout=60)
    assert {r["status"] for r in records.values()} == {"succeeded"}


def test_down_keeps_volumes_and_data_then_clean_removes_them(
    backend: DockerBackend, api: ClusterAPI
) -> None:
    [job_id] = api.enqueue(1)
    api.wait_finished([job_id])

    async def follow_through_down() -> None:
        async def follow() -> None:
            async for _line in backend.logs(["backend"], follow=True, tail=0):
                pass

        task = asyncio.create_task(follow())
        await backend.down()
        await asyncio.wait_for(task, timeout=15)  # `logs -f` ends once the cluster is down

    asyncio.run(follow_through_down())
    assert backend._containers() == [] and backend._project_networks() == []
    volumes = {v.name for v in backend._project_volumes()}
    assert f"{PROJECT}_redis_data" in volumes and len(volumes) == 8  # secrets too
    asyncio.run(backend.up(1))
    assert api.job(job_id)["status"] == "succeeded"  # Redis's AOF lived in its volume
    messages: list[str] = []
    asyncio.run(backend.clean(lambda _step, message: messages.append(message)))
    assert backend._project_volumes() == [] and backend._containers() == []
    assert not any("kept" in m for m in messages) and "8 volume(s)" in messages[-1]


def test_logs_of_an_unknown_project_are_an_error(capsys) -> None:  # type: ignore[no-untyped-def]
    for follow in ([], ["-f"]):  # and -f does not wait forever
        code = cluster_main(["logs", *follow, "--backend", "docker", "--project", "nothing-here"])
        assert code == 1
        assert "no Docker cluster 'nothing-here'" in capsys.readouterr().err


def test_a_rebuild_of_an_unchanged_project_keeps_its_images(
    build_messages: list[tuple[str, str]],
) -> None:
    builder = DockerBackend(PROJECT)
    client = builder._connect()

    def images() -> dict[str, str]:
        return {tag: client.images.get(tag).id for tag in (IMAGES["backend"], IMAGES["worker"])}

    def dangling() -> set[str]:
        return {
            i.id for i in client.images.list(filters={"dangling": True, "label": "io.mimir.image"})
        }

    def build_again() -> None:
        docker_images._WHEELHOUSES_BUILT.clear()  # as a new `mimir cluster build` would
        asyncio.run(builder.build())

    # Once first: the sources may have changed since the module's build (then the images
    # are new, and the ones they replace are removed, not left dangling).
    dangling_before = dangling()
    build_again()
    assert dangling() <= dangling_before
    before = images()
    build_again()
    assert images() == before
    assert dangling() <= dangling_before


def test_a_taken_port_is_reported(build_messages: list[tuple[str, str]]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        cluster = DockerBackend(f"{PROJECT}-port", api_port=port, start_timeout=30)
        try:
            with pytest.raises(ClusterError, match=f"port {port} on 127.0.0.1 is already in use"):
                asyncio.run(cluster.up(1))
            # A failed `up` leaves nothing behind: no container, network or volume.
            assert cluster._containers() == []
            assert cluster._project_networks() == [] and cluster._project_volumes() == []
        finally:
            asyncio.run(cluster.clean())


def test_a_missing_image_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(IMAGES, "backend", "mimir-aip:no-such-image")
    with pytest.raises(ClusterError, match="image missing: mimir-aip:no-such-image"):
        asyncio.run(DockerBackend(f"{PROJECT}-img").up(1))


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose missing")
def test_compose_project_is_its_own_and_the_backend_scales_it(
    build_messages: list[tuple[str, str]],
) -> None:
    port = free_port()
    project = f"{PROJECT}-compose"
    token = "compose-test-token"  # the compose files refuse to start without one
    env = {
        **os.environ,
        "MIMIR_PORT": str(port),
        "REDIS_IMAGE": FALLBACK_REDIS_IMAGE,
        "MIMIR_API_TOKEN": token,
        "MIMIR_REDIS_PASSWORD": "compose-test-redis-password",  # required as the token
    }
    env.pop("MIMIR_PROJECT", None)  # the old files' label: -p alone must be enough now
    compose = ["docker-compose", "-p", project, "-f", "docker-compose.distributed.yml"]

    def run(*args: str) -> None:
        result = subprocess.run(
            [*compose, *args], cwd=PACKAGING, env=env, capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, result.stderr[-2000:]

    cluster = DockerBackend(project, grace=10, start_timeout=120)
    victim = DockerBackend(f"{PROJECT}-victim")
    run("up", "-d", "--no-build", "--scale", "worker=3")
    client = cluster._connect()
    # What the old compose files made: our project label saying another project.
    decoy_labels = {
        "io.mimir.project": victim.project,
        "com.docker.compose.project": project,
        "io.mimir.service": "worker",
        "io.mimir.volume": "decoy",
    }
    decoy_volume = client.volumes.create(f"{project}_decoy", labels=decoy_labels)
    decoy = client.containers.create(IMAGES["worker"], ["true"], labels=decoy_labels)
    api = ClusterAPI(f"http://127.0.0.1:{port}", token)
    try:
        wait_until(lambda: _alive(api) and len(_worker_hosts(api)) == 3, timeout=90)
        # Everything compose made is the project's, by compose's own project label.
        # 8 (compose creates prometheus_data, though its service is in a profile) and the decoy
        assert len(cluster._project_volumes()) == 9
        assert [n.name for n in cluster._project_networks()] == [f"{project}_mimir-network"]
        status = wait_until(
            lambda: (lambda s: _service(s, "worker").health == "healthy" and s)(
                asyncio.run(cluster.status())
            ),
            timeout=30,
            message="compose's workers healthy in status",
        )
        assert _service(status, "worker").replicas == 3
        # Another project's clean leaves it alone, decoy included.
        asyncio.run(victim.clean())
        decoy.reload()
        decoy_volume.reload()
        assert len(cluster._containers("worker")) == 4  # 3 running, the decoy created
        decoy.remove(force=True, v=True)  # (scale would remove it too: a worker that does not run)
        # The backend scales compose's workers: numbers 1-3 are taken, 4 is started.
        status = asyncio.run(cluster.scale(4))
        assert _service(status, "worker").replicas == 4
        assert f"{project}-worker-4" in _worker_hosts(api)
        status = asyncio.run(cluster.scale(2))
        assert (_service(status, "worker").replicas, _service(status, "worker").health) == (
            2,
            "healthy",
        )
        records = api.wait_finished(api.enqueue(10), timeout=60)
        assert {r["status"] for r in records.values()} == {"succeeded"}
    finally:
        api.close()
        with contextlib.suppress(docker.errors.NotFound):
            decoy.remove(force=True, v=True)
        run("down", "-v", "--timeout", "5")
        asyncio.run(cluster.clean())


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
        assert cluster._containers() == [] and cluster._project_volumes() == []
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
        container.remove(force=True, v=True)
