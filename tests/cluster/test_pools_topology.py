"""Worker pools in the topology: one scalable service per pool, and the compose files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from mimir.app.cluster.base import ClusterError
from mimir.app.cluster.compose import EXAMPLE_CLUSTER_FILE, pools_compose
from mimir.app.cluster.topology import (
    LABEL_POOL,
    LABEL_SERVICE,
    build_topology,
    parse_worker_name,
    pool_service,
    replica_name,
    service_kind,
)
from mimir.core.pools import load_cluster_file, parse_cluster_file, pools_from_env

PACKAGING = Path(__file__).resolve().parents[2] / "packaging"

TWO_POOLS = """\
version: 1
pools:
  default:
    replicas: 3
  slow:
    queues: [slow, slower]
    concurrency: 2
    job_types: [pipeline, digital_twin]
    image: example/slow-worker:1
    cpus: 2
    memory: 1g
    environment: {SLOW_MODE: "1"}
"""


def test_the_default_topology_has_one_pool_served_by_the_worker_service() -> None:
    topology = build_topology("demo", worker_concurrency=7)
    [worker] = topology.worker_services()
    assert (worker.name, worker.pool) == ("worker", "default")
    assert worker.command == ["mimir", "worker", "--pool", "default", "--queues", "default"]
    assert worker.environment["WORKER_CONCURRENCY"] == "7"
    backend = topology.service("backend").environment
    cluster = pools_from_env(backend)
    assert cluster is not None and list(cluster.pools) == ["default"]
    assert backend["MIMIR_PROJECT"] == "demo"
    assert "MIMIR_CLUSTER_BACKEND" not in backend  # no backend to scale through: none said


def test_each_pool_is_a_scalable_service_with_its_own_settings() -> None:
    cluster = parse_cluster_file(TWO_POOLS)
    topology = build_topology(
        "demo", cluster=cluster, cluster_backend="docker", worker_concurrency=5,
        worker_cpus=1.5, worker_memory="768m",
    )  # fmt: skip
    assert list(topology.services) == ["redis", "backend", "worker", "worker-slow"]
    assert topology.volumes.count("worker_data") == 1  # the pools share the worker volumes
    default, slow = topology.pool_spec("default"), topology.pool_spec("slow")
    # The default pool leaves its limits alone: the backend's apply.
    assert (default.cpus, default.memory, default.image) == (1.5, "768m", "mimir-aip:worker-latest")
    assert default.environment["WORKER_CONCURRENCY"] == "5"
    assert slow.scalable and slow.kind == "worker" and slow.pool == "slow"
    assert slow.command == [
        "mimir", "worker", "--pool", "slow", "--queues", "slow,slower",
        "--job-types", "pipeline,digital_twin",
    ]  # fmt: skip
    assert (slow.cpus, slow.memory, slow.image) == (2.0, "1g", "example/slow-worker:1")
    assert slow.environment["WORKER_CONCURRENCY"] == "2"
    assert slow.environment["SLOW_MODE"] == "1"
    assert slow.environment["REDIS_URL"] == default.environment["REDIS_URL"]
    assert topology.container_name("worker-slow", 2) == "demo-worker-slow-2"
    assert topology.labels("worker-slow", 2)[LABEL_POOL] == "slow"
    assert topology.labels("worker-slow", 2)[LABEL_SERVICE] == "worker"
    backend = topology.service("backend").environment
    assert backend["MIMIR_CLUSTER_BACKEND"] == "docker"
    assert json.loads(backend["MIMIR_POOLS"])["pools"]["slow"]["queues"] == ["slow", "slower"]
    with pytest.raises(ClusterError, match="unknown pool 'gpu'; this cluster has default, slow"):
        topology.pool_spec("gpu")


def test_worker_names_parse_one_way() -> None:
    assert (pool_service("default"), pool_service("slow")) == ("worker", "worker-slow")
    assert (replica_name("default", 3), replica_name("slow", 2)) == ("worker-3", "worker-slow-2")
    assert parse_worker_name("worker") == (None, None)
    assert parse_worker_name("worker-3") == ("default", 3)
    assert parse_worker_name("worker-slow") == ("slow", None)
    assert parse_worker_name("worker-slow-2") == ("slow", 2)
    assert parse_worker_name("worker-default") == ("default", None)
    for name in ("redis", "backend", "worker-Slow", "worker-", "worker-slow-x", "workers"):
        assert parse_worker_name(name) is None
    assert [service_kind(n) for n in ("server", "worker-slow", "worker-slow-2", "x")] == [
        "server", "worker", None, None,
    ]  # fmt: skip


def test_the_pools_compose_file_has_one_service_per_pool() -> None:
    cluster = load_cluster_file(PACKAGING / EXAMPLE_CLUSTER_FILE)
    document = pools_compose()
    services = document["services"]
    assert [name for name in services if name.startswith("worker")] == [
        "worker",
        *(f"worker-{p}" for p in cluster.pools if p != "default"),
    ]
    slow = services["worker-slow"]
    assert slow["labels"] == {LABEL_SERVICE: "worker", LABEL_POOL: "slow"}
    assert slow["command"][2:] == ["--pool", "slow", "--queues", "slow", "--job-types", "pipeline"]
    assert slow["mem_limit"] == "1g" and slow["environment"]["WORKER_CONCURRENCY"] == "2"
    # Only the default pool's concurrency follows WORKER_CONCURRENCY from the shell.
    assert services["worker"]["environment"]["WORKER_CONCURRENCY"].startswith("${")
    on_disk = yaml.safe_load((PACKAGING / "docker-compose.pools.yml").read_text())
    assert on_disk == document


def test_the_compose_file_of_a_cluster_file_in_another_directory(tmp_path: Path) -> None:
    (tmp_path / EXAMPLE_CLUSTER_FILE).write_text(TWO_POOLS)
    services = pools_compose(tmp_path)["services"]
    assert "build" not in services["worker-slow"]  # its own image: pulled, not built
    assert services["worker-slow"]["image"] == "example/slow-worker:1"
    assert services["worker"]["build"]["dockerfile"] == "Dockerfile.worker"
