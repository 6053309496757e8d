"""Worker pools on the local backend, end to end: a cluster file with two pools, real
redis-server, server and worker processes; scaling one pool leaves the other alone."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from mimir.app.cluster.base import ClusterError, ClusterStatus, ServiceStatus
from mimir.app.cluster.cli import main as cluster_main
from mimir.app.cluster.local import LocalBackend
from mimir.app.cluster.local_state import read_state
from mimir.core.pools import pools_from_env
from mimir.core.settings import Settings
from tests.cluster.conftest import ClusterAPI, cluster_env, sleep_pipeline
from tests.helpers import free_port

pytestmark = pytest.mark.slow

PROJECT = "pooltest"

CLUSTER_FILE = """\
version: 1
pools:
  default:
    replicas: 1
  slow:
    queues: [slow]
    concurrency: 1
    job_types: [pipeline]
    replicas: 1
    max: 3
    environment: {MIMIR_TEST_POOL_MARK: slow-pool}
"""


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("local-pools")


@pytest.fixture(scope="module")
def cli_env(root: Path) -> Iterator[None]:
    """What `mimir cluster` reads, set for the whole module."""
    with pytest.MonkeyPatch.context() as patch:
        for key, value in cluster_env(root).items():
            patch.setenv(key, value)
        patch.delenv("DOCKER_HOST", raising=False)
        yield


@pytest.fixture(scope="module")
def backend(root: Path, cli_env: None) -> Iterator[LocalBackend]:
    """A two-pool cluster started by `mimir cluster up --file`, shared by the module."""
    path = root / "mimir-cluster.yaml"
    path.write_text(CLUSTER_FILE)
    port = free_port()
    argv = ["up", "--file", str(path), "--backend", "local", "--project", PROJECT]
    argv += ["--port", str(port), "--grace", "15", "--timeout", "60"]
    cluster = LocalBackend(PROJECT, Settings.from_env(cluster_env(root)), api_port=port, grace=15)
    try:
        assert cluster_main(argv) == 0
        yield cluster
    finally:
        asyncio.run(cluster.clean())


def _rows(status: ClusterStatus) -> dict[str, ServiceStatus]:
    return {s.pool: s for s in status.services if s.kind == "worker" and s.pool}


def _pids(backend: LocalBackend, pool: str) -> dict[str, int]:
    state = backend.load_state()
    assert state is not None
    return {e.name: e.pid for e in state.pool_entries(pool)}


def test_up_from_a_cluster_file_starts_every_pool(backend: LocalBackend, api: ClusterAPI) -> None:
    assert set(_pids(backend, "default")) == {"worker-1"}
    assert set(_pids(backend, "slow")) == {"worker-slow-1"}
    rows = _rows(asyncio.run(backend.status()))
    assert list(rows) == ["default", "slow"]
    assert (rows["default"].name, rows["slow"].name) == ("worker", "worker-slow")
    for row in rows.values():
        assert (row.state, row.health, row.replicas, row.wanted) == ("running", "healthy", 1, 1)
    state = backend.load_state()
    assert state is not None and list(state.cluster_file.pools) == ["default", "slow"]
    # The server knows the pools, and how its autoscaler reaches them.
    backend_entry = state.entry("backend")
    assert backend_entry is not None
    server_env = psutil.Process(backend_entry.pid).environ()
    cluster = pools_from_env(server_env)
    assert cluster is not None and cluster.pools["slow"].queues == ["slow"]
    assert (server_env["MIMIR_CLUSTER_BACKEND"], server_env["MIMIR_PROJECT"]) == ("local", PROJECT)
    # Each worker runs with its pool's queues, concurrency and environment.
    slow = psutil.Process(_pids(backend, "slow")["worker-slow-1"])
    assert slow.cmdline()[-6:] == ["--pool", "slow", "--queues", "slow", "--job-types", "pipeline"]
    slow_env = slow.environ()
    assert slow_env["WORKER_CONCURRENCY"] == "1"
    assert slow_env["MIMIR_TEST_POOL_MARK"] == "slow-pool"
    assert "MIMIR_POOLS" not in slow_env
    heartbeats = {w["pid"]: w for w in api.workers()}
    assert heartbeats[slow.pid]["queues"] == ["slow"]
    assert heartbeats[_pids(backend, "default")["worker-1"]]["queues"] == ["default"]


def test_jobs_for_a_queue_run_on_its_pool_only(backend: LocalBackend, api: ClusterAPI) -> None:
    response = api.client.post(
        "/api/v1/queue/pipelines/enqueue",
        json={"pipeline": sleep_pipeline(0.05), "context": {}, "queue": "slow"},
    )
    assert response.status_code == 202, response.text
    job_id = response.json()["job_id"]
    record = api.wait_finished([job_id], timeout=60)[job_id]
    assert record["status"] == "succeeded"
    slow_pid = _pids(backend, "slow")["worker-slow-1"]
    slow_ids = {w["worker_id"] for w in api.workers() if w["pid"] == slow_pid}
    assert record["worker_id"] in slow_ids


def test_scaling_one_pool_leaves_the_other_alone(
    backend: LocalBackend, capsys: pytest.CaptureFixture[str]
) -> None:
    default_before = _pids(backend, "default")
    assert cluster_main(["scale", "--pool", "slow", "2", "--project", PROJECT]) == 0
    assert set(_pids(backend, "slow")) == {"worker-slow-1", "worker-slow-2"}
    assert _pids(backend, "default") == default_before
    rows = _rows(asyncio.run(backend.status()))
    assert (rows["slow"].replicas, rows["slow"].wanted) == (2, 2)
    assert (rows["default"].replicas, rows["default"].wanted) == (1, 1)
    capsys.readouterr()
    # The other form, and the pools table of `status`.
    assert cluster_main(["scale", "default", "2", "--project", PROJECT]) == 0
    assert set(_pids(backend, "slow")) == {"worker-slow-1", "worker-slow-2"}
    assert set(_pids(backend, "default")) == {"worker-1", "worker-2"}
    capsys.readouterr()
    assert cluster_main(["status", "--project", PROJECT]) == 0
    out = capsys.readouterr().out
    lines = [line.split() for line in out.splitlines()]
    assert ["POOL", "REPLICAS", "QUEUED", "OLDEST", "JOBS/S"] in lines
    pools = {line[0]: line[1:] for line in lines if line and line[0] in ("default", "slow")}
    assert pools["default"][0] == "2/2" and pools["slow"][0] == "2/2"
    assert pools["slow"][1] == "0"  # the API answered: the pool's waiting jobs


def test_scaling_down_a_pool_drains_only_its_workers(backend: LocalBackend) -> None:
    default_before = _pids(backend, "default")
    leaving = _pids(backend, "slow")["worker-slow-2"]
    status = asyncio.run(backend.scale(1, pool="slow"))
    assert _rows(status)["slow"].replicas == 1
    assert not psutil.pid_exists(leaving) or psutil.Process(leaving).status() == "zombie"
    assert _pids(backend, "default") == default_before
    log = (backend.logs_dir / "worker-slow-2.log").read_text()
    assert "stopped (processed" in log  # a graceful stop (SIGTERM), not a kill


def test_unknown_pools_and_counts_past_a_pools_max_are_refused(
    backend: LocalBackend, capsys: pytest.CaptureFixture[str]
) -> None:
    before = read_state(backend.state_path)
    with pytest.raises(ClusterError, match="unknown pool 'gpu'; this cluster has default, slow"):
        asyncio.run(backend.scale(1, pool="gpu"))
    with pytest.raises(ClusterError, match="refusing 4 workers in pool 'slow': its max is 3"):
        asyncio.run(backend.scale(4, pool="slow"))
    assert cluster_main(["scale", "gpu", "1", "--project", PROJECT]) == 1
    assert "unknown pool 'gpu'; this cluster has default, slow" in capsys.readouterr().err
    assert read_state(backend.state_path) == before


def test_restart_a_pool_or_one_of_its_workers(backend: LocalBackend) -> None:
    default_before = _pids(backend, "default")
    old = _pids(backend, "slow")["worker-slow-1"]
    asyncio.run(backend.restart("worker-slow-1"))
    new = _pids(backend, "slow")["worker-slow-1"]
    assert new != old
    asyncio.run(backend.restart("worker-slow"))
    assert _pids(backend, "slow")["worker-slow-1"] not in (old, new)
    assert _pids(backend, "default") == default_before
    with pytest.raises(ClusterError, match="unknown pool 'gpu'"):
        asyncio.run(backend.restart("worker-gpu"))
    assert asyncio.run(backend.status()).running


def test_logs_of_a_pool(backend: LocalBackend) -> None:
    async def lines() -> set[str]:
        return {line.service async for line in backend.logs(["worker-slow"], tail=5)}

    assert asyncio.run(lines()) == {"worker-slow-1"}


def test_up_again_without_a_file_keeps_the_pools_and_their_sizes(backend: LocalBackend) -> None:
    pids = {**_pids(backend, "default"), **_pids(backend, "slow")}
    assert cluster_main(["up", "--backend", "local", "--project", PROJECT]) == 0
    assert {**_pids(backend, "default"), **_pids(backend, "slow")} == pids


def test_up_with_another_file_stops_the_pools_it_drops_and_tells_the_server(
    backend: LocalBackend, root: Path, api: ClusterAPI
) -> None:
    default_before = _pids(backend, "default")
    path = root / "only-default.yaml"
    path.write_text("pools:\n  default: {replicas: 2}\n")
    assert cluster_main(["up", "--file", str(path), "--project", PROJECT]) == 0
    assert _pids(backend, "slow") == {}
    assert _pids(backend, "default") == default_before
    state = backend.load_state()
    assert state is not None and list(state.cluster_file.pools) == ["default"]
    backend_entry = state.entry("backend")
    assert backend_entry is not None
    cluster = pools_from_env(psutil.Process(backend_entry.pid).environ())
    assert cluster is not None and list(cluster.pools) == ["default"]
    assert [r.pool for r in asyncio.run(backend.status()).services if r.kind == "worker"] == [
        "default"
    ]
    assert api.workers()  # the restarted server answers


def test_a_state_written_before_pools_still_reads(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    entry = {"name": "worker-1", "service": "worker", "pid": 1, "create_time": 0.0, "log": "x"}
    old = {
        "project": "old", "api_port": 8080, "redis_port": 6400,
        "redis_url": "redis://127.0.0.1:6400/0", "own_redis": True, "processes": [entry],
        "started_at": 0.0, "version": 1,
    }  # fmt: skip
    path.write_text(json.dumps(old))
    state = read_state(path)
    assert state is not None
    assert list(state.cluster_file.pools) == ["default"]
    assert state.processes[0].pool == "default" and state.wanted == {}
