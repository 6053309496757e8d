"""The topology definition, and the compose files generated from it."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from mimir.app.cluster.base import ClusterError
from mimir.app.cluster.compose import (
    PROMETHEUS_TOKEN_FILE,
    TOKEN_FROM_ENV,
    compose_prometheus_config,
    distributed_compose,
    pools_compose,
    unified_compose,
)
from mimir.app.cluster.topology import (
    LABEL_POOL,
    LABEL_PROJECT,
    LABEL_REPLICA,
    LABEL_SERVICE,
    build_topology,
    parse_memory,
)

PACKAGING = Path(__file__).resolve().parents[2] / "packaging"
COMPOSE_FILES = [
    "docker-compose.distributed.yml",
    "docker-compose.pools.yml",
    "docker-compose.unified.yml",
]


def test_seed_topology_services_volumes_and_limits() -> None:
    topology = build_topology("demo", workers=3)
    assert list(topology.services) == ["redis", "backend", "worker"]
    assert topology.volumes == [
        "redis_data",
        "backend_data",
        "backend_logs",
        "backend_plugins",
        "backend_pipelines",
        "worker_data",
        "worker_logs",
    ]
    backend, worker = topology.service("backend"), topology.service("worker")
    assert (backend.cpus, backend.memory_bytes) == (1.0, 1024**3)
    assert (worker.cpus, worker.memory_bytes) == (0.5, 512 * 1024**2)
    assert backend.ports == {8080: ("127.0.0.1", 8080)}
    assert "--appendonly" in topology.service("redis").command
    assert backend.environment["REDIS_URL"] == worker.environment["REDIS_URL"]
    assert topology.service("server") is backend


def test_names_and_labels_tie_objects_to_their_project() -> None:
    topology = build_topology("demo")
    assert topology.container_name("worker", 2) == "demo-worker-2"
    assert topology.container_name("backend") == "demo-backend"
    assert topology.volume_name("redis_data") == "demo_redis_data"
    assert topology.labels("worker", 2) == {
        LABEL_PROJECT: "demo",
        LABEL_SERVICE: "worker",
        LABEL_POOL: "default",
        LABEL_REPLICA: "2",
    }


def test_api_beyond_loopback_needs_a_token() -> None:
    with pytest.raises(ClusterError, match="API token"):
        build_topology("demo", api_host="0.0.0.0")
    topology = build_topology("demo", api_host="0.0.0.0", api_token="s3cret")
    backend = topology.service("backend")
    assert backend.environment["MIMIR_API_TOKEN"] == "s3cret"
    assert "--insecure" not in backend.command
    assert "--insecure" in build_topology("demo").service("backend").command


@pytest.mark.parametrize("name", ["", "Bad", "-x", "a b", "x" * 50, "../x", "mimir\n", "\nmimir"])
def test_bad_project_names_are_refused(name: str) -> None:
    with pytest.raises(ClusterError, match="invalid project name"):
        build_topology(name)


def test_unknown_service_names_the_known_ones() -> None:
    with pytest.raises(ClusterError, match="redis, backend, worker"):
        build_topology("demo").service("frontend")


@pytest.mark.parametrize(
    ("text", "expected"), [("512m", 512 * 1024**2), ("1g", 1024**3), ("1G", 1024**3), (7, 7)]
)
def test_parse_memory(text: str | int, expected: int) -> None:
    assert parse_memory(text) == expected


def test_parse_memory_refuses_nonsense() -> None:
    with pytest.raises(ClusterError, match="invalid memory size"):
        parse_memory("lots")


@pytest.mark.parametrize(
    ("filename", "render"),
    [
        ("docker-compose.distributed.yml", distributed_compose),
        ("docker-compose.pools.yml", pools_compose),
        ("docker-compose.unified.yml", unified_compose),
        ("prometheus/prometheus.yml", compose_prometheus_config),
    ],
)
def test_compose_files_match_the_topology(filename: str, render: object) -> None:
    on_disk = yaml.safe_load((PACKAGING / filename).read_text())
    assert on_disk == render(), (  # type: ignore[operator]
        f"packaging/{filename} is out of date: run python -m mimir.app.cluster.compose"
    )


def test_distributed_compose_describes_the_topology() -> None:
    document = distributed_compose()
    # Prometheus is in the file, in the profile `monitoring` (started only when asked for).
    topology = build_topology("mimir", monitoring=True, api_token=TOKEN_FROM_ENV)
    services = document["services"]
    assert set(services) == set(topology.services)
    assert set(document["volumes"]) == set(topology.volumes)
    worker = services["worker"]
    # `--scale worker=N` needs no fixed name and no published port on the worker.
    assert "container_name" not in worker and "ports" not in worker
    assert (worker["cpus"], worker["mem_limit"]) == (0.5, "512m")
    assert services["backend"]["ports"] == ["${MIMIR_BIND:-127.0.0.1}:${MIMIR_PORT:-8080}:8080"]
    assert services["prometheus"]["profiles"] == ["monitoring"]
    assert services["prometheus"]["ports"] == ["127.0.0.1:${PROMETHEUS_PORT:-9090}:9090"]
    # The others always start.
    assert [n for n, s in services.items() if "profiles" in s] == ["prometheus"]
    for name, spec in topology.services.items():
        if name == "prometheus":  # writes the scrape's token file, then runs the same command
            shell = services[name]["command"]
            assert shell[:2] == ["sh", "-c"]
            assert shell[2].endswith("&& exec " + " ".join(spec.command))
        else:
            assert services[name]["command"] == spec.command
        mounts = [f"{m.volume}:{m.target}" for m in spec.volumes]
        assert services[name]["volumes"][: len(mounts)] == mounts


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose not installed")
@pytest.mark.parametrize("filename", COMPOSE_FILES)
def test_docker_compose_config_validates(filename: str) -> None:
    result = subprocess.run(
        ["docker-compose", "-f", str(PACKAGING / filename), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "MIMIR_API_TOKEN": "a-token-for-the-check"},
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("filename", ["docker-compose.distributed.yml", "docker-compose.pools.yml"])
def test_compose_files_take_the_token_from_the_environment(filename: str) -> None:
    text = (PACKAGING / filename).read_text()
    assert "--insecure" not in text
    services = yaml.safe_load(text)["services"]
    # The backend and the Prometheus that scrapes it: the operator's token, required.
    for name in ("backend", "prometheus"):
        assert services[name]["environment"]["MIMIR_API_TOKEN"] == TOKEN_FROM_ENV
    assert f'"$$MIMIR_API_TOKEN" > {PROMETHEUS_TOKEN_FILE}' in services["prometheus"]["command"][2]
    scrape = yaml.safe_load((PACKAGING / "prometheus" / "prometheus.yml").read_text())
    auth = scrape["scrape_configs"][0]["authorization"]
    assert auth == {"type": "Bearer", "credentials_file": PROMETHEUS_TOKEN_FILE}


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose not installed")
def test_compose_refuses_to_start_without_a_token() -> None:
    env = {k: v for k, v in os.environ.items() if k != "MIMIR_API_TOKEN"}
    result = subprocess.run(
        ["docker-compose", "-f", str(PACKAGING / "docker-compose.distributed.yml"), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert result.returncode != 0
    assert "set MIMIR_API_TOKEN to a long random secret" in result.stderr
