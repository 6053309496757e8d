"""The topology definition, and the compose files generated from it."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
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
    API_TOKEN_FILE,
    LABEL_POOL,
    LABEL_PROJECT,
    LABEL_REPLICA,
    LABEL_SERVICE,
    REDIS_PASSWORD_FILE,
    SECRETS_DIR,
    WORKER_HEALTH_FILE,
    VolumeMount,
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
        "secrets",
    ]
    backend, worker = topology.service("backend"), topology.service("worker")
    assert (backend.cpus, backend.memory_bytes) == (1.0, 1024**3)
    assert (worker.cpus, worker.memory_bytes) == (0.5, 512 * 1024**2)
    assert backend.ports == {8080: ("127.0.0.1", 8080)}
    assert "--appendonly yes" in topology.service("redis").command[2]
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
    # The token is the topology's, and a secret file in the backend: never in its env.
    assert topology.api_token == "s3cret"
    assert "s3cret" not in str(topology.services)
    assert backend.environment["MIMIR_API_TOKEN_FILE"] == API_TOKEN_FILE
    assert backend.secrets == ["mimir_api_token", "mimir_redis_password"]
    assert "--insecure" not in backend.command
    # No token: loopback only, the server open (--insecure), no token file.
    open_backend = build_topology("demo").service("backend")
    assert "--insecure" in open_backend.command
    assert "MIMIR_API_TOKEN_FILE" not in open_backend.environment
    assert open_backend.secrets == ["mimir_redis_password"]


def test_every_service_is_hardened() -> None:
    topology = build_topology("demo", monitoring=True, api_token="s3cret")
    users = {"redis": "999:1000", "backend": "10001:10001", "worker": "10001:10001"}
    users["prometheus"] = "10001:10001"
    pids = {"redis": 256, "backend": 512, "worker": 256, "prometheus": 256}
    for name, spec in topology.services.items():
        assert spec.user == users[name], name
        assert spec.read_only and "/tmp" in spec.tmpfs and spec.cap_add == []
        assert spec.pids == pids[name]
        assert spec.cpus is not None and spec.memory is not None
        assert spec.healthcheck, name
        # Every secret is a file of the read-only secrets volume, and nothing else is.
        mounts = [m for m in spec.volumes if m.volume == "secrets"]
        assert mounts == ([VolumeMount("secrets", SECRETS_DIR, True)] if spec.secrets else [])
        assert "s3cret" not in str(spec)
    assert topology.service("redis").memory == "1g"
    assert topology.volumes[-1] == "secrets"
    # The token only where it is needed (Prometheus scrapes with it); the Redis password in
    # Redis and its clients.
    secrets = {name: spec.secrets for name, spec in topology.services.items()}
    assert secrets == {
        "redis": ["mimir_redis_password"],
        "backend": ["mimir_api_token", "mimir_redis_password"],
        "worker": ["mimir_redis_password"],
        "prometheus": ["mimir_api_token"],
    }


def test_redis_reads_its_password_from_the_secret_file() -> None:
    redis = build_topology("demo", redis_maxmemory="100mb").service("redis")
    script = redis.command[2]
    assert redis.command[:2] == ["sh", "-c"]
    assert f'"$(cat {REDIS_PASSWORD_FILE})"' in script and "umask 077" in script
    assert "maxmemory-policy noeviction" in script and "--protected-mode yes" in script
    assert redis.environment == {"MIMIR_REDIS_MAXMEMORY": "100mb"}
    assert redis.healthcheck == [
        "CMD-SHELL",
        f'REDISCLI_AUTH="$(cat {REDIS_PASSWORD_FILE})" redis-cli ping | grep -q PONG',
    ]
    worker = build_topology("demo").service("worker")
    assert worker.environment["REDIS_URL"] == "redis://redis:6379/0"
    assert worker.environment["MIMIR_REDIS_PASSWORD_FILE"] == REDIS_PASSWORD_FILE
    assert worker.environment["MIMIR_WORKER_HEALTH_FILE"] == WORKER_HEALTH_FILE


def test_redis_script_runs_with_a_password_file(tmp_path: Path) -> None:
    """The Redis start script, run by sh with the paths moved under tmp_path: the conf it
    writes is 0600 and holds the password; without the file it stops with a message."""
    password = tmp_path / "password"
    conf = tmp_path / "redis.conf"
    script = (
        build_topology("demo")
        .service("redis")
        .command[2]
        .replace(REDIS_PASSWORD_FILE, str(password))
        .replace("/tmp/redis.conf", str(conf))
        .replace("exec redis-server", "exec true")
    )
    missing = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=10)
    assert missing.returncode == 1 and "no Redis password" in missing.stderr
    password.write_text("pw-1\n")
    done = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=10)
    assert done.returncode == 0, done.stderr
    assert conf.read_text() == "requirepass pw-1\nmaxmemory 768mb\nmaxmemory-policy noeviction\n"
    assert conf.stat().st_mode & 0o777 == 0o600


def test_worker_healthcheck_is_the_heartbeat_files_age(tmp_path: Path) -> None:
    check = build_topology("demo").service("worker").healthcheck
    assert check is not None and check[0] == "CMD"
    beat = tmp_path / "beat"
    env = {**os.environ, "MIMIR_WORKER_HEALTH_FILE": str(beat), "MIMIR_WORKER_HEARTBEAT": "2"}

    def healthy() -> bool:
        return subprocess.run(check[1:], env=env, timeout=30).returncode == 0

    assert not healthy()  # no heartbeat yet
    beat.touch()
    assert healthy()
    os.utime(beat, (time.time() - 7, time.time() - 7))  # older than 3 heartbeats
    assert not healthy()


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
    # Not the secrets volume (compose takes them from the environment) nor Prometheus's
    # configuration volume (a file beside the compose file there).
    assert set(document["volumes"]) == set(topology.volumes) - {"secrets", "prometheus_config"}
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
        elif name == "redis":  # the password from the environment (compose 2.4: no secrets)
            assert services[name]["command"][2].endswith(spec.command[2].split("&& ")[-1])
        else:
            assert services[name]["command"] == spec.command
        # The secrets volume and Prometheus's configuration volume are not in compose.
        mounts = [
            f"{m.volume}:{m.target}"
            for m in spec.volumes
            if m.volume not in ("secrets", "prometheus_config")
        ]
        assert services[name]["volumes"][: len(mounts)] == mounts
        # The hardening, as the topology has it.
        service = services[name]
        assert service["user"] == spec.user and service["read_only"] is True
        assert service["security_opt"] == ["no-new-privileges:true"]
        assert service["cap_drop"] == ["ALL"] and service["pids_limit"] == spec.pids
        assert service["tmpfs"] == [f"/tmp:{spec.tmpfs['/tmp']}"]
        assert service["mem_limit"] == spec.memory and "healthcheck" in service


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose not installed")
@pytest.mark.parametrize("filename", COMPOSE_FILES)
def test_docker_compose_config_validates(filename: str) -> None:
    result = subprocess.run(
        ["docker-compose", "-f", str(PACKAGING / filename), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        env={
            **os.environ,
            "MIMIR_API_TOKEN": "a-token-for-the-check",
            "MIMIR_REDIS_PASSWORD": "a-password-for-the-check",
        },
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
    # Compose 2.4 has no secrets: the Redis password from the operator's environment too.
    assert services["redis"]["environment"]["REDIS_PASSWORD"].startswith("${MIMIR_REDIS_PASSWORD:?")
    assert '"$$REDIS_PASSWORD"' in services["redis"]["command"][2]
    for name, service in services.items():
        env = service.get("environment", {})
        assert not {"MIMIR_API_TOKEN_FILE", "MIMIR_REDIS_PASSWORD_FILE"} & set(env), name
        if name.startswith("worker") or name == "backend":
            assert env["REDIS_URL"] == "redis://:${MIMIR_REDIS_PASSWORD}@redis:6379/0"


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose not installed")
@pytest.mark.parametrize(
    ("missing", "present"),
    [("MIMIR_API_TOKEN", "MIMIR_REDIS_PASSWORD"), ("MIMIR_REDIS_PASSWORD", "MIMIR_API_TOKEN")],
)
def test_compose_refuses_to_start_without_a_token(missing: str, present: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != missing}
    env[present] = "set"
    result = subprocess.run(
        ["docker-compose", "-f", str(PACKAGING / "docker-compose.distributed.yml"), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert result.returncode != 0
    assert f"set {missing} to a long random secret" in result.stderr
