"""Worker pools and the autoscaler on the Docker backend, against the real engine.

One cluster for the module, from a cluster file with four pools: ``default``; ``slow``
(queue ``slow``, max 3); ``burst`` (queue ``burst``, autoscaled 1..3, target backlog 5);
``wake`` (queue ``wake``, autoscaled 0..1). Jobs of a queue run on its pool only; scaling
one pool leaves the others alone; the autoscaler in the backend container scales ``burst``
up on a burst and back to its min, and wakes ``wake`` from zero for one job, through
``mimir cluster scale`` run in that container over the engine's mounted socket.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

import pytest

from mimir.app.cluster.base import ClusterError, ClusterStatus, ServiceStatus
from mimir.app.cluster.cli import main as cluster_main
from mimir.app.cluster.docker_backend import ENGINE_SOCKET, INSIDE_ENV, DockerBackend
from mimir.app.cluster.selection import docker_engine_answers
from mimir.core.pools import parse_cluster_file, pools_from_env
from tests.cluster.conftest import ClusterAPI, sleep_pipeline
from tests.helpers import free_port, wait_until

#: The tests that need the real engine (the first two need none).
_ENGINE = [
    pytest.mark.docker,
    pytest.mark.skipif(not docker_engine_answers(), reason="no Docker engine answers"),
]


def _engine(test: Any) -> Any:
    for mark in _ENGINE:
        test = mark(test)
    return test


PROJECT = "mimirpools"

#: One evaluation a second; short cooldowns, so that the way back down is seen too.
CLUSTER = """\
version: 1
autoscaler:
  period: 1
pools:
  default:
    replicas: 1
  slow:
    queues: [slow]
    concurrency: 1
    replicas: 1
    max: 3
    environment: {MIMIR_TEST_POOL_MARK: slow-pool}
  burst:
    queues: [burst]
    concurrency: 1
    min: 1
    max: 3
    autoscale: {target_backlog: 5, step_up: 4, step_down: 2, cooldown_up: 1, cooldown_down: 3}
  wake:
    queues: [wake]
    concurrency: 1
    min: 0
    max: 1
    autoscale: {target_backlog: 5, cooldown_up: 1, cooldown_down: 3}
"""


INSIDE = {"project": "inner", "worker_concurrency": 3, "grace": 12.0,
          "resources": {"worker_cpus": 1.0}}  # fmt: skip


def test_inside_its_backend_container_the_backend_uses_the_container_port_and_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(INSIDE_ENV, json.dumps(INSIDE))
    monkeypatch.setenv("DOCKER_HOST", f"unix://{ENGINE_SOCKET}")
    inner = DockerBackend("inner")
    assert inner.inside and inner.api_url == "http://127.0.0.1:8080"
    assert (inner.grace, inner.worker_concurrency, inner.resources) == (
        12.0,
        3,
        {"worker_cpus": 1.0},
    )
    assert DockerBackend("inner", grace=4).grace == 4  # what is given wins
    # Another project, from the same container, is reached as from anywhere else.
    other = DockerBackend("other", api_port=18080)
    assert not other.inside and other.api_url == "http://127.0.0.1:18080"
    assert other.grace == 30.0


def test_the_engine_is_mounted_only_for_a_cluster_with_an_autoscaled_pool(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:9")  # nothing answers: never asked
    backend = DockerBackend("plain")
    backend.cluster = parse_cluster_file(
        "pools:\n  default: {}\n  slow: {queues: [slow], max: 2}\n"
    )
    assert backend._engine_mount() is None
    topology = backend.topology(1)
    assert [s.name for s in topology.worker_services()] == ["worker", "worker-slow"]
    assert topology.services["worker-slow"].command[-4:] == ["--pool", "slow", "--queues", "slow"]


@pytest.fixture(scope="module")
def backend() -> Iterator[DockerBackend]:
    # Built here too: the images must carry this checkout's worker (--pool) and the Docker
    # SDK in the backend image (the autoscaler's `mimir cluster scale`).
    asyncio.run(DockerBackend(PROJECT).build())
    cluster = DockerBackend(PROJECT, api_port=free_port(), grace=10, start_timeout=120)
    asyncio.run(cluster.clean())  # leftovers of an interrupted run
    asyncio.run(cluster.up(None, cluster=parse_cluster_file(CLUSTER)))
    try:
        yield cluster
    finally:
        asyncio.run(cluster.clean())
        cluster.close()


def _rows(status: ClusterStatus) -> dict[str, ServiceStatus]:
    return {s.pool: s for s in status.services if s.kind == "worker" and s.pool}


def _containers(backend: DockerBackend, pool: str) -> dict[str, str]:
    """The pool's running worker containers: name -> id."""
    return {
        c.name: c.id
        for c in backend._containers("worker")
        if c.labels.get("io.mimir.pool") == pool and c.status == "running"
    }


def _heartbeats(api: ClusterAPI, pool: str) -> list[dict[str, Any]]:
    """Live, not draining workers of ``pool``, from their heartbeats."""
    return [w for w in api.workers() if w.get("pool") == pool and not w.get("draining")]


def _enqueue(api: ClusterAPI, queue: str, count: int, seconds: float) -> list[str]:
    ids = []
    for _ in range(count):
        response = api.client.post(
            "/api/v1/queue/pipelines/enqueue",
            json={"pipeline": sleep_pipeline(seconds), "context": {}, "queue": queue},
        )
        assert response.status_code == 202, response.text
        assert "warning" not in response.json() or not response.json()["warning"]
        ids.append(response.json()["job_id"])
    return ids


def _autoscaler(api: ClusterAPI) -> dict[str, Any]:
    response = api.client.get("/api/v1/autoscaler")
    assert response.status_code == 200, response.text
    return dict(response.json())


def _decisions(api: ClusterAPI, pool: str, since: float) -> list[dict[str, Any]]:
    """``pool``'s decisions made after ``since`` (epoch seconds), oldest first."""
    made = [
        d
        for d in _autoscaler(api)["decisions"]
        if d["pool"] == pool and datetime.fromisoformat(d["time"]).timestamp() >= since
    ]
    return sorted(made, key=lambda d: d["time"])


@_engine
def test_up_from_a_cluster_file_runs_every_pool(backend: DockerBackend, api: ClusterAPI) -> None:
    rows = _rows(asyncio.run(backend.status()))
    assert list(rows) == ["default", "slow", "burst", "wake"]
    assert [rows[p].name for p in rows] == ["worker", "worker-slow", "worker-burst", "worker-wake"]
    for pool in ("default", "slow", "burst"):
        assert (rows[pool].state, rows[pool].replicas, rows[pool].wanted) == ("running", 1, 1)
        assert rows[pool].health == "healthy"
    # min 0 and idle: no container, and the row says so.
    assert (rows["wake"].state, rows["wake"].replicas, rows["wake"].wanted) == ("stopped", 0, 0)
    assert set(_containers(backend, "slow")) == {f"{PROJECT}-worker-slow-1"}
    # The engine remembers the pools: a new backend object reads them back.
    cluster = asyncio.run(DockerBackend(PROJECT).cluster_file())
    assert cluster is not None and list(cluster.pools) == ["default", "slow", "burst", "wake"]
    # Each worker runs its pool's command, concurrency and environment.
    [slow] = [c for c in backend._containers("worker") if c.name.endswith("-worker-slow-1")]
    assert slow.attrs["Config"]["Cmd"][-4:] == ["--pool", "slow", "--queues", "slow"]
    env = dict(item.split("=", 1) for item in slow.attrs["Config"]["Env"])
    assert (env["WORKER_CONCURRENCY"], env["MIMIR_TEST_POOL_MARK"]) == ("1", "slow-pool")
    assert "MIMIR_POOLS" not in env and "DOCKER_HOST" not in env and INSIDE_ENV not in env
    assert ENGINE_SOCKET not in {m["Destination"] for m in slow.attrs["Mounts"]}
    heartbeats = {w["hostname"]: w for w in api.workers()}
    assert heartbeats[f"{PROJECT}-worker-slow-1"]["queues"] == ["slow"]
    assert heartbeats[f"{PROJECT}-worker-1"]["pool"] == "default"


@_engine
def test_an_autoscaled_cluster_gives_its_backend_the_engine(backend: DockerBackend) -> None:
    [server] = backend._containers("backend")
    env = dict(item.split("=", 1) for item in server.attrs["Config"]["Env"])
    cluster = pools_from_env(env)
    assert cluster is not None and cluster.pools["burst"].autoscaled
    assert (env["MIMIR_CLUSTER_BACKEND"], env["MIMIR_PROJECT"]) == ("docker", PROJECT)
    assert env["DOCKER_HOST"] == f"unix://{ENGINE_SOCKET}"
    assert json.loads(env[INSIDE_ENV])["project"] == PROJECT
    [mount] = [m for m in server.attrs["Mounts"] if m["Destination"] == ENGINE_SOCKET]
    assert mount["Type"] == "bind"
    # The image's non-root user reaches the engine through the socket's group.
    code, output = server.exec_run(
        ["python3", "-c", "import docker, os; print(os.getuid(), docker.from_env().ping())"]
    )
    assert code == 0 and output.decode().split() == ["10001", "True"], output


@_engine
def test_jobs_of_a_queue_run_on_its_pool_only(backend: DockerBackend, api: ClusterAPI) -> None:
    slow_ids = _enqueue(api, "slow", 6, 0.05)
    default_ids = _enqueue(api, "default", 6, 0.05)
    records = api.wait_finished(slow_ids + default_ids, timeout=120)
    assert {r["status"] for r in records.values()} == {"succeeded"}
    by_pool = {
        pool: {w["worker_id"] for w in _heartbeats(api, pool)} for pool in ("slow", "default")
    }
    assert {records[i]["worker_id"] for i in slow_ids} <= by_pool["slow"]
    assert {records[i]["worker_id"] for i in default_ids} <= by_pool["default"]


@_engine
def test_scaling_one_pool_leaves_the_others_alone(
    backend: DockerBackend, capsys: pytest.CaptureFixture[str]
) -> None:
    default_before, burst_before = _containers(backend, "default"), _containers(backend, "burst")
    argv = ["--backend", "docker", "--project", PROJECT]
    assert cluster_main(["scale", "--pool", "slow", "2", *argv]) == 0
    assert set(_containers(backend, "slow")) == {
        f"{PROJECT}-worker-slow-1",
        f"{PROJECT}-worker-slow-2",
    }
    assert _containers(backend, "default") == default_before
    assert _containers(backend, "burst") == burst_before
    slow_before = _containers(backend, "slow")
    status = asyncio.run(backend.scale(2))  # the pool default
    assert _rows(status)["default"].replicas == 2 and _rows(status)["default"].wanted == 2
    assert _containers(backend, "slow") == slow_before
    status = asyncio.run(backend.scale(1, pool="slow"))
    rows = _rows(status)
    assert (rows["slow"].replicas, rows["default"].replicas) == (1, 2)
    assert list(_containers(backend, "slow")) == [f"{PROJECT}-worker-slow-1"]
    asyncio.run(backend.scale(1))
    # An unknown pool names the cluster's; a count past a pool's max is refused.
    assert cluster_main(["scale", "nosuch", "1", *argv]) == 1
    assert "unknown pool 'nosuch'; this cluster has default, slow, burst, wake" in (
        capsys.readouterr().err
    )
    with pytest.raises(ClusterError, match="refusing 4 workers in pool 'slow': its max is 3"):
        asyncio.run(backend.scale(4, pool="slow"))


@_engine
def test_restart_and_logs_name_a_pool_or_one_of_its_workers(backend: DockerBackend) -> None:
    def started() -> dict[str, str]:
        return {c.name: c.attrs["State"]["StartedAt"] for c in backend._containers("worker")}

    before = started()
    asyncio.run(backend.restart("worker-slow"))
    after = started()
    assert after[f"{PROJECT}-worker-slow-1"] != before[f"{PROJECT}-worker-slow-1"]
    assert after[f"{PROJECT}-worker-1"] == before[f"{PROJECT}-worker-1"]
    asyncio.run(backend.restart("worker-slow-1"))
    assert started()[f"{PROJECT}-worker-1"] == before[f"{PROJECT}-worker-1"]
    with pytest.raises(ClusterError, match="unknown pool 'nosuch'"):
        asyncio.run(backend.restart("worker-nosuch"))

    async def services(names: list[str]) -> set[str]:
        return {line.service async for line in backend.logs(names, tail=5)}

    assert asyncio.run(services(["worker-slow"])) == {"worker-slow-1"}
    assert asyncio.run(services(["worker-slow-1", "worker-1"])) == {"worker-slow-1", "worker-1"}


@_engine
def test_the_autoscaler_scales_a_burst_up_to_max_and_every_job_runs_once(
    backend: DockerBackend, api: ClusterAPI
) -> None:
    state = _autoscaler(api)
    assert state["enabled"], state["reason"]
    assert (state["pools"]["burst"]["min"], state["pools"]["burst"]["max"]) == (1, 3)
    wait_until(lambda: _autoscaler(api)["leader"] is not None, timeout=30, message="a leader")
    start = time.time()
    with ThreadPoolExecutor(max_workers=4) as pool:
        batches = pool.map(lambda _: _enqueue(api, "burst", 15, 0.2), range(4))
        ids = [job for batch in batches for job in batch]
    seen = {1}

    def three_running() -> bool:
        seen.add(len(_heartbeats(api, "burst")))
        return 3 in seen

    wait_until(three_running, timeout=90, interval=0.3, message="never 3 burst workers")
    ups = [d for d in _decisions(api, "burst", start) if d["to"] > d["from"]]
    assert ups and ups[0]["from"] == 1 and ups[-1]["to"] == 3, ups
    records = api.wait_finished(ids, timeout=180)
    assert {r["status"] for r in records.values()} == {"succeeded"} and len(records) == 60
    assert {r["attempts"] for r in records.values()} == {1}  # none delivered twice
    # Run by the pool's workers only (a worker id holds its container's host name).
    ran_on = {r["worker_id"] for r in records.values()}
    assert all(f"-{PROJECT}-worker-burst-" in worker for worker in ran_on), ran_on
    # The other pools were not touched.
    assert len(_containers(backend, "default")) == 1 and len(_containers(backend, "slow")) == 1


@_engine
def test_after_the_queue_empties_the_pool_returns_to_min(
    backend: DockerBackend, api: ClusterAPI
) -> None:
    wait_until(
        lambda: len(_containers(backend, "burst")) == 1,
        timeout=120,
        interval=0.5,
        message="burst back to 1 container",
    )
    wait_until(lambda: len(_heartbeats(api, "burst")) == 1, timeout=30, interval=0.5)
    pool = _autoscaler(api)["pools"]["burst"]
    assert pool["last_error"] is None, pool
    downs = [
        d for d in _autoscaler(api)["decisions"] if d["pool"] == "burst" and d["to"] < d["from"]
    ]
    assert downs and min(d["to"] for d in downs) == 1, downs
    assert _rows(asyncio.run(backend.status()))["burst"].wanted == 1


@_engine
def test_with_min_zero_a_job_wakes_the_pool(backend: DockerBackend, api: ClusterAPI) -> None:
    assert _containers(backend, "wake") == {} and _heartbeats(api, "wake") == []
    woken = time.time()
    [job] = _enqueue(api, "wake", 1, 0.05)
    record = api.wait_finished([job], timeout=120)[job]
    assert record["status"] == "succeeded" and record["attempts"] == 1, record
    assert f"-{PROJECT}-worker-wake-1-" in record["worker_id"], record
    wake = [d for d in _decisions(api, "wake", woken) if d["from"] == 0]
    assert wake and wake[0]["to"] == 1, wake
    # And back to sleep once idle for its cooldown.
    wait_until(
        lambda: _containers(backend, "wake") == {},
        timeout=90,
        interval=0.5,
        message="wake back to 0",
    )


#: The cluster file again without the autoscaled pools.
PLAIN = """\
version: 1
pools:
  default:
    replicas: 1
  slow:
    queues: [slow]
    concurrency: 1
    replicas: 1
    max: 3
    environment: {MIMIR_TEST_POOL_MARK: slow-pool}
"""


@_engine
def test_up_with_another_cluster_file_drops_its_pools_and_the_engine_access(
    backend: DockerBackend, api: ClusterAPI
) -> None:
    [before] = backend._containers("backend")
    slow_before = _containers(backend, "slow")
    status = asyncio.run(backend.up(None, cluster=parse_cluster_file(PLAIN)))
    assert list(_rows(status)) == ["default", "slow"]
    assert [c for c in backend._containers("worker") if c.labels["io.mimir.pool"] == "burst"] == []
    assert _containers(backend, "slow") == slow_before  # a pool that stays keeps its workers
    # The API server's container is new: the new pools, and no engine (nothing autoscales).
    [server] = backend._containers("backend")
    assert server.id != before.id
    env = dict(item.split("=", 1) for item in server.attrs["Config"]["Env"])
    cluster = pools_from_env(env)
    assert cluster is not None and list(cluster.pools) == ["default", "slow"]
    assert "DOCKER_HOST" not in env and INSIDE_ENV not in env
    assert ENGINE_SOCKET not in {m["Destination"] for m in server.attrs["Mounts"]}
    records = api.wait_finished(_enqueue(api, "slow", 2, 0.05), timeout=60)
    assert {r["status"] for r in records.values()} == {"succeeded"}
