"""The Swarm service specs (app/cluster/swarm_spec.py) and the stack file: no engine needed.

The specs go through docker-py's own conversion (what ``client.services.create`` sends),
so the checks are on the request the engine would get."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from docker.models.services import _get_create_service_kwargs

from mimir.app.cluster.base import ClusterError
from mimir.app.cluster.compose import render_stack
from mimir.app.cluster.swarm_spec import registry_spec, service_specs, swarm_worker_hostname
from mimir.app.cluster.topology import (
    API_TOKEN_FILE,
    REDIS_PASSWORD_FILE,
    SECRETS_DIR,
    build_topology,
)
from mimir.core.pools import ClusterFile, PoolSpec

TOKEN = "swarm-spec-token-not-to-be-seen"
SECRETS = {"mimir_api_token": "id-token", "mimir_redis_password": "id-redis"}
DATA = "node.labels.io.mimir.data==true"
LONGEST_POOL = "p" + "x" * 30  # POOL_NAME_PATTERN: 31 characters at most
LONGEST_PROJECT = "m" * 41  # validate_project_name: 41 at most


def _requests(**kwargs: Any) -> dict[str, dict[str, Any]]:
    cluster = ClusterFile(
        pools={
            "default": PoolSpec(name="default", queues=["default"]),
            LONGEST_POOL: PoolSpec(name=LONGEST_POOL, queues=["slow"], replicas=3),
        }
    )
    topology = build_topology(
        LONGEST_PROJECT,
        workers=4,
        api_host="0.0.0.0",
        api_token=TOKEN,
        cluster=cluster,
        monitoring=True,
    )
    specs = service_specs(
        topology,
        images={"mimir-aip:worker-latest": "10.1.0.2:5000/mimir-aip:worker-latest"},
        secrets=SECRETS,
        data_constraint=DATA,
        grace=20,
        **kwargs,
    )
    # What docker-py makes of them: the create request's body.
    return {name: _get_create_service_kwargs("create", dict(spec)) for name, spec in specs.items()}


def test_secret_files_live_in_the_secrets_dir() -> None:
    assert f"{SECRETS_DIR}/mimir_api_token" == API_TOKEN_FILE
    assert f"{SECRETS_DIR}/mimir_redis_password" == REDIS_PASSWORD_FILE


def test_specs_hold_no_secret_and_are_hardened() -> None:
    requests = _requests()
    # Prometheus is not deployed on a swarm.
    assert set(requests) == {"redis", "backend", "worker", f"worker-{LONGEST_POOL}"}
    assert TOKEN not in json.dumps(requests)
    for name, request in requests.items():
        container = request["task_template"]["ContainerSpec"]
        assert request["name"] == f"{LONGEST_PROJECT}_{name}"
        assert not any(
            e.split("=", 1)[0] in ("MIMIR_API_TOKEN", "REDIS_PASSWORD") for e in container["Env"]
        )
        assert "@" not in json.dumps(container["Env"])  # no password in a URL
        # args, not command: the image's setpriv ENTRYPOINT stays.
        assert container["Command"] is None and container["Args"]
        assert container["User"] not in (None, "", "root", "0", "0:0")
        assert container["ReadOnly"] is True and container["CapabilityDrop"] == ["ALL"]
        assert "CapabilityAdd" not in container
        assert container["Healthcheck"]["Test"]
        assert container["StopGracePeriod"] == 20 * 10**9
        tmpfs = {m["Target"]: m for m in container["Mounts"] if m["Type"] == "tmpfs"}
        assert tmpfs["/tmp"]["TmpfsOptions"]["Mode"] == 0o1777
        volumes = [m for m in container["Mounts"] if m["Type"] == "volume"]
        if name.startswith("worker"):
            # A worker's volumes are tmpfs of its task: nothing stays on the nodes.
            assert set(tmpfs) == {"/tmp", "/app/data", "/app/logs"} and not volumes
        else:
            assert set(tmpfs) == {"/tmp"} and volumes
        assert all(m["Source"].startswith(f"{LONGEST_PROJECT}_") for m in volumes)
        assert SECRETS_DIR not in {m["Target"] for m in volumes}  # Docker secrets instead
        limits = request["task_template"]["Resources"]["Limits"]
        assert limits["Pids"] > 0 and limits["MemoryBytes"] > 0 and limits["NanoCPUs"] > 0
        assert request["task_template"]["RestartPolicy"]["Condition"] == "any"
        assert request["update_config"]["Order"] == "stop-first"
        assert request["endpoint_spec"]["Mode"] == "dnsrr"
        (network,) = request["task_template"]["Networks"]
        assert network["Target"] == f"{LONGEST_PROJECT}_mimir-network"
    assert requests["redis"]["task_template"]["ContainerSpec"]["User"] == "999:1000"
    assert requests["redis"]["task_template"]["Networks"][0]["Aliases"] == ["redis"]


def test_secrets_per_service_with_their_users() -> None:
    requests = _requests()

    def secrets(name: str) -> dict[str, tuple[str, str, str, int]]:
        refs = requests[name]["task_template"]["ContainerSpec"]["Secrets"]
        return {
            r["File"]["Name"]: (
                r["SecretName"],
                r["File"]["UID"],
                r["File"]["GID"],
                r["File"]["Mode"],
            )
            for r in refs
        }

    redis_secret = f"{LONGEST_PROJECT}_mimir_redis_password"
    assert secrets("redis") == {"mimir_redis_password": (redis_secret, "999", "1000", 0o400)}
    assert secrets("backend") == {
        "mimir_api_token": (f"{LONGEST_PROJECT}_mimir_api_token", "10001", "10001", 0o400),
        "mimir_redis_password": (redis_secret, "10001", "10001", 0o400),
    }
    for worker in ("worker", f"worker-{LONGEST_POOL}"):
        assert secrets(worker) == {"mimir_redis_password": (redis_secret, "10001", "10001", 0o400)}
    backend_env = requests["backend"]["task_template"]["ContainerSpec"]["Env"]
    assert f"MIMIR_API_TOKEN_FILE={API_TOKEN_FILE}" in backend_env
    assert f"MIMIR_REDIS_PASSWORD_FILE={REDIS_PASSWORD_FILE}" in backend_env


def test_placement_ports_replicas_and_hostnames() -> None:
    requests = _requests()
    for name in ("redis", "backend"):
        placement = requests[name]["task_template"]["Placement"]
        assert placement == {"Constraints": [DATA]}
    for name in ("worker", f"worker-{LONGEST_POOL}"):
        placement = requests[name]["task_template"]["Placement"]
        assert placement == {"Preferences": [{"Spread": {"SpreadDescriptor": "node.id"}}]}
    # Only the backend publishes, host mode (no routing mesh without IPVS).
    assert requests["backend"]["endpoint_spec"]["Ports"] == [
        {"Protocol": "tcp", "PublishedPort": 8080, "TargetPort": 8080, "PublishMode": "host"}
    ]
    assert all("Ports" not in r["endpoint_spec"] for n, r in requests.items() if n != "backend")
    replicas = {n: r["mode"]["replicated"]["Replicas"] for n, r in requests.items()}
    assert replicas == {"redis": 1, "backend": 1, "worker": 4, f"worker-{LONGEST_POOL}": 3}
    images = {n: r["task_template"]["ContainerSpec"]["Image"] for n, r in requests.items()}
    assert images["worker"] == "10.1.0.2:5000/mimir-aip:worker-latest"
    assert images["backend"] == "mimir-aip:backend-latest"  # not in `images`: as it is
    # A worker's hostname is unique per task, and a hostname (≤ 63) once Swarm fills it in
    # (slot ≤ 64 workers, a task ID is 25 characters).
    hostname = requests[f"worker-{LONGEST_POOL}"]["task_template"]["ContainerSpec"]["Hostname"]
    assert hostname == swarm_worker_hostname(LONGEST_POOL)
    filled = hostname.replace("{{.Task.Slot}}", "64").replace("{{.Task.ID}}", "x" * 25)
    assert len(filled) <= 63
    assert "Hostname" not in requests["backend"]["task_template"]["ContainerSpec"]
    scaled = _requests(replicas={"worker": 0})
    assert scaled["worker"]["mode"]["replicated"]["Replicas"] == 0


def test_wrong_modes_and_missing_secrets_are_refused() -> None:
    with pytest.raises(ClusterError, match="host mode only"):
        _requests(publish_mode="ingress")
    topology = build_topology("demo", api_token=TOKEN)
    with pytest.raises(ClusterError, match="demo_mimir_api_token is missing"):
        service_specs(
            topology,
            images={},
            secrets={"mimir_redis_password": "x"},
            data_constraint=DATA,
            grace=5,
        )
    # The routing mesh (kernels with IPVS): vip, ingress publishing.
    specs = service_specs(
        topology,
        images={},
        secrets={"demo_mimir_api_token": "a", "demo_mimir_redis_password": "b"},
        data_constraint=DATA,
        endpoint_mode="vip",
        publish_mode="ingress",
        grace=5,
    )
    assert specs["backend"]["endpoint_spec"]["Mode"] == "vip"
    assert specs["backend"]["endpoint_spec"]["Ports"][0]["PublishMode"] == "ingress"


def test_registry_spec() -> None:
    topology = build_topology("demo")
    request = _get_create_service_kwargs(
        "create", dict(registry_spec(topology, data_constraint="node.hostname==n1"))
    )
    container = request["task_template"]["ContainerSpec"]
    assert request["name"] == "demo_registry"
    assert container["Image"] == "mimir-aip:registry-latest"
    assert container["ReadOnly"] is True and container["CapabilityDrop"] == ["ALL"]
    assert request["task_template"]["Placement"] == {"Constraints": ["node.hostname==n1"]}
    assert request["endpoint_spec"]["Ports"] == [
        {"Protocol": "tcp", "PublishedPort": 5000, "TargetPort": 5000, "PublishMode": "host"}
    ]
    (volume,) = [m for m in container["Mounts"] if m["Type"] == "volume"]
    assert volume["Source"] == "demo_registry_data"
    assert request["task_template"]["Resources"]["Limits"]["Pids"] == 256


# ---------------------------------------------------------------- the stack file

STACK = Path(__file__).resolve().parents[2] / "packaging" / "docker-stack.yml"


def test_the_stack_file_matches_the_topology() -> None:
    assert STACK.read_text() == render_stack(), (
        "packaging/docker-stack.yml is out of date: run python -m mimir.app.cluster.compose"
    )


def test_the_stack_file_has_only_what_stack_deploy_applies() -> None:
    document = yaml.safe_load(STACK.read_text())
    assert document["version"] == "3.8"
    assert set(document["secrets"]) == {"mimir_api_token", "mimir_redis_password"}
    assert all(secret == {"external": True} for secret in document["secrets"].values())
    text = STACK.read_text()
    assert "--insecure" not in text
    for name, service in document["services"].items():
        # Ignored or refused by `docker stack deploy`.
        assert not {"mem_limit", "cpus", "restart", "depends_on", "build", "profiles"} & set(
            service
        ), name
        assert service["deploy"]["endpoint_mode"] == "dnsrr"
        assert service["read_only"] is True and service["cap_drop"] == ["ALL"]
        assert service["user"] in ("10001:10001", "999:1000")
        assert service["volumes"][0]["type"] == "tmpfs"
        env = service.get("environment", {})
        assert not {"MIMIR_API_TOKEN", "REDIS_PASSWORD"} & set(env)
        # Every image from the registry (`build --push`): no node pulls from docker.io.
        assert service["image"].startswith("${MIMIR_REGISTRY:-127.0.0.1:5000}/"), name
        if name != "redis":
            assert service["image"].startswith("${MIMIR_REGISTRY:-127.0.0.1:5000}/mimir-aip:")
    services = document["services"]
    assert services["backend"]["ports"] == [
        {"target": 8080, "published": 8080, "protocol": "tcp", "mode": "host"}
    ]
    data = ["node.labels.io.mimir.data == true"]
    for name in ("redis", "backend"):
        assert services[name]["deploy"]["placement"] == {"constraints": data}
    assert services["worker"]["deploy"]["placement"] == {"preferences": [{"spread": "node.id"}]}
    assert [s["source"] for s in services["backend"]["secrets"]] == [
        "mimir_api_token",
        "mimir_redis_password",
    ]
    assert services["redis"]["secrets"] == [
        {"source": "mimir_redis_password", "target": "mimir_redis_password", "uid": "999",
         "gid": "1000", "mode": 0o400}
    ]  # fmt: skip


def _docker_stack_config() -> bool:
    """Whether the docker CLI has ``stack config`` (CLI 24 and later). Debian 12's docker.io
    (20.10) answers ``stack config --help`` with the help of ``stack``, exit 0: the probe
    looks for the command's own ``--compose-file`` option."""
    if shutil.which("docker") is None:
        return False
    probe = subprocess.run(
        ["docker", "stack", "config", "--help"], capture_output=True, text=True, timeout=30
    )
    return probe.returncode == 0 and "--compose-file" in probe.stdout


def _loaded_by(command: list[str]) -> dict[str, Any]:
    """The stack file as ``command`` loads it (with a registry set), its images checked."""
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "MIMIR_REGISTRY": "10.9.0.1:5000"},
    )
    assert result.returncode == 0, result.stderr
    loaded = yaml.safe_load(result.stdout)
    assert loaded["services"]["worker"]["image"] == "10.9.0.1:5000/mimir-aip:worker-latest"
    assert loaded["services"]["redis"]["image"] == "10.9.0.1:5000/redis:7-alpine"
    assert loaded["services"]["worker"]["deploy"]["endpoint_mode"] == "dnsrr"
    return dict(loaded)


def test_the_compose_loader_accepts_the_stack_file() -> None:
    """docker-compose's loader (installed by scripts/system-deps.sh on every machine the
    tests run on) validates the file against the version 3.8 schema that ``docker stack
    deploy`` uses: no unknown key (a misspelt ``deploy`` key fails here), interpolation,
    types. Its output is a Compose file again, so ``$$`` stays escaped there."""
    loaded = _loaded_by(["docker-compose", "-f", str(STACK), "config"])
    redis_command = loaded["services"]["redis"]["command"][2]
    assert '"$$(cat /run/secrets/mimir_redis_password)"' in redis_command


@pytest.mark.skipif(
    not _docker_stack_config(),
    reason="the docker CLI has no 'stack config' (CLI 24+; Debian 12's is 20.10): the "
    "Compose loader's test above checks the same schema",
)
def test_docker_stack_config_accepts_the_stack_file() -> None:
    """The CLI's own loader (no swarm needed): schema, interpolation, types."""
    loaded = _loaded_by(["docker", "stack", "config", "-c", str(STACK)])
    # $ reaches the container's shell unexpanded (escaped from the interpolation).
    assert '"$(cat /run/secrets/mimir_redis_password)"' in loaded["services"]["redis"]["command"][2]
