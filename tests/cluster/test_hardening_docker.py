"""Hardened containers on a real engine: every container of a Docker cluster (Redis, the API
server, a worker, Prometheus) as ``docker inspect`` shows it, and what runs inside.

Non-root user, no-new-privileges (the engine's option and the kernel's flag of PID 1), all
capabilities dropped, a read-only root filesystem, pids and memory limits, a healthcheck
that reaches "healthy" (the worker's too), no token or Redis password in any environment,
command or image; Redis refuses a client without the password, keeps protected mode and
never evicts; each container sees only the secrets its service lists (a worker, which runs
pipeline code, never the API token; Prometheus never the Redis password), with the contract's
owners and modes; the password survives ``down``/``up``; a job runs; a cluster from before
per-service secrets volumes is asked to ``down`` first, then migrated.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from typing import Any

import docker
import pytest

from mimir.app.cluster.base import ClusterError
from mimir.app.cluster.docker_backend import DockerBackend, _Created
from mimir.app.cluster.selection import docker_engine_answers
from mimir.app.cluster.topology import IMAGES, PROMETHEUS
from tests.cluster.conftest import ClusterAPI
from tests.helpers import free_port, wait_until

pytestmark = [
    pytest.mark.docker,
    pytest.mark.slow,
    pytest.mark.skipif(not docker_engine_answers(), reason="no Docker engine answers"),
]

PROJECT = "mimirharden"
TOKEN = "hardening-" + secrets.token_urlsafe(16)


@pytest.fixture(scope="module")
def backend() -> Iterator[DockerBackend]:
    cluster = DockerBackend(
        PROJECT,
        api_port=free_port(),
        api_token=TOKEN,
        worker_concurrency=2,
        grace=5,
        start_timeout=120,
        monitoring=True,
        prometheus_port=free_port(),
    )
    # What `mimir cluster build --monitoring` makes; on a fresh engine (tests/cluster/
    # test_docker.py before this builds no Prometheus image) this builds it.
    if not all(cluster._image_exists(IMAGES[which]) for which in ("backend", "worker", PROMETHEUS)):
        asyncio.run(cluster.build())
    for which in ("backend", "worker", PROMETHEUS):
        assert cluster._image_exists(IMAGES[which]), f"{IMAGES[which]} not built"
    asyncio.run(cluster.clean())  # leftovers of an interrupted run
    asyncio.run(cluster.up(1))
    try:
        yield cluster
    finally:
        asyncio.run(cluster.clean())
        cluster.close()


def _containers(backend: DockerBackend) -> dict[str, Any]:
    found = {c.labels["io.mimir.service"]: c for c in backend._containers()}
    assert set(found) == {"redis", "backend", "worker", PROMETHEUS}, sorted(found)
    return found


def _exec(container: Any, command: list[str], **env: str) -> tuple[int, str]:
    code, output = container.exec_run(command, environment=env or None)
    return code, (output or b"").decode("utf-8", "replace").strip()


def test_every_container_is_hardened_and_healthy(backend: DockerBackend) -> None:
    password = backend.redis_password
    assert password and len(password) >= 40
    containers = _containers(backend)
    client = backend._connect()
    for service, container in containers.items():
        config, host = container.attrs["Config"], container.attrs["HostConfig"]
        assert config["User"] not in ("", "root", "0", "0:0"), service
        assert "no-new-privileges:true" in (host["SecurityOpt"] or []), service
        assert host["CapDrop"] == ["ALL"] and not host["CapAdd"], service
        assert host["ReadonlyRootfs"] is True, service
        assert host["PidsLimit"] and host["PidsLimit"] > 0, service
        assert host["Memory"] > 0 and host["NanoCpus"] > 0, service
        assert "/tmp" in (host["Tmpfs"] or {}), service
        assert config["Healthcheck"]["Test"], service
        image = client.images.get(config["Image"]).attrs["Config"]
        shown = " ".join(
            [*(config["Env"] or []), *(config["Cmd"] or []), *(container.attrs["Args"] or []),
             *(image.get("Env") or []), *(image.get("Cmd") or [])]
        )  # fmt: skip
        assert TOKEN not in shown and password not in shown, service
        assert "MIMIR_API_TOKEN=" not in shown, service
        code, flag = _exec(container, ["grep", "NoNewPrivs", "/proc/1/status"])
        assert (code, flag.split()) == (0, ["NoNewPrivs:", "1"]), service

    def health() -> dict[str, str]:
        return {
            service: client.containers.get(c.id).attrs["State"].get("Health", {}).get("Status")
            for service, c in containers.items()
        }

    wait_until(
        lambda: set(health().values()) == {"healthy"},
        timeout=45,
        interval=0.5,
        message="every container healthy",
    )


def test_redis_requires_its_password_from_the_secrets_volume(backend: DockerBackend) -> None:
    password = backend.redis_password
    assert password is not None
    redis = _containers(backend)["redis"]
    assert "NOAUTH" in _exec(redis, ["redis-cli", "ping"])[1]
    assert _exec(redis, ["redis-cli", "ping"], REDISCLI_AUTH=password)[1] == "PONG"
    for key, value in (("protected-mode", "yes"), ("maxmemory-policy", "noeviction"),
                       ("maxmemory", str(768 * 1024**2))):  # fmt: skip
        answer = _exec(redis, ["redis-cli", "CONFIG", "GET", key], REDISCLI_AUTH=password)[1]
        assert answer.split() == [key, value]
    # The secrets' owners and modes: the token for uid 10001 only, the password for
    # 10001 and group 1000 (Redis's).
    server = _containers(backend)["backend"]
    code, listing = _exec(
        server, ["stat", "-c", "%n %a %u %g", "/run/secrets/mimir_api_token",
                 "/run/secrets/mimir_redis_password"]
    )  # fmt: skip
    assert code == 0, listing
    assert listing.splitlines() == [
        "/run/secrets/mimir_api_token 400 10001 10001",
        "/run/secrets/mimir_redis_password 440 10001 1000",
    ]
    assert _exec(server, ["touch", "/app/x"])[0] != 0  # read-only root filesystem
    assert _exec(server, ["touch", "/run/secrets/x"])[0] != 0  # read-only secrets


def test_each_container_sees_only_its_own_secrets(backend: DockerBackend) -> None:
    containers = _containers(backend)
    listing = {
        service: _exec(c, ["sh", "-c", "cd /run/secrets && stat -c '%n %a %u %g' *"])
        for service, c in containers.items()
    }
    assert listing == {
        "backend": (0, "mimir_api_token 400 10001 10001\nmimir_redis_password 440 10001 1000"),
        "worker": (0, "mimir_redis_password 440 10001 1000"),
        "redis": (0, "mimir_redis_password 440 10001 1000"),
        PROMETHEUS: (0, "mimir_api_token 400 10001 10001"),
    }
    # A pipeline step in a worker runs as the worker's user: no token to read.
    code, out = _exec(containers["worker"], ["cat", "/run/secrets/mimir_api_token"])
    assert code != 0 and TOKEN not in out
    password = backend.redis_password
    assert password
    code, out = _exec(containers[PROMETHEUS], ["cat", "/run/secrets/mimir_redis_password"])
    assert code != 0 and password not in out
    assert _exec(containers["backend"], ["cat", "/run/secrets/mimir_api_token"]) == (0, TOKEN)
    assert _exec(containers["worker"], ["cat", "/run/secrets/mimir_redis_password"]) == (
        0,
        password,
    )
    volumes = {v.name for v in backend._project_volumes() if "secrets" in v.name}
    assert volumes == {
        f"{PROJECT}_secrets_api_token",
        f"{PROJECT}_secrets_redis_password",
        f"{PROJECT}_secrets_api_token_redis_password",
    }


def test_a_job_runs_and_the_password_survives_down_and_up(backend: DockerBackend) -> None:
    api = ClusterAPI(backend.api_url, TOKEN)
    try:
        assert (
            api.client.get("/api/v1/queue/status", headers={"Authorization": ""}).status_code == 401
        )
        [job] = api.enqueue(1)
        assert api.wait_finished([job], timeout=60)[job]["status"] == "succeeded"
    finally:
        api.close()
    before = backend.redis_password
    asyncio.run(backend.down())
    again = DockerBackend(PROJECT, api_port=backend.api_port, api_token=TOKEN, grace=5)
    try:
        asyncio.run(again.up(1))
        assert again.redis_password == before
        api = ClusterAPI(again.api_url, TOKEN)
        try:
            # The job queued before `down` is still there: the same Redis data, reached
            # with the same password.
            assert api.job(job)["status"] == "succeeded"
        finally:
            api.close()
        # A new console finds the token in the secrets volume, not in any environment.
        fresh = DockerBackend(PROJECT)
        try:
            assert asyncio.run(fresh.reach_api()) and fresh.api_token == TOKEN
        finally:
            fresh.close()
    finally:
        again.close()


def test_a_cluster_with_the_old_shared_secrets_volume_is_stopped_then_migrated() -> None:
    project = f"{PROJECT}-shared"
    cluster = DockerBackend(project, api_port=free_port(), api_token=TOKEN, start_timeout=30)
    client = cluster._connect()
    topology = cluster.topology(1)
    legacy = topology.volume_name("secrets")
    try:
        volume = client.volumes.create(
            legacy, labels={"io.mimir.project": project, "io.mimir.volume": "secrets"}
        )
        image = IMAGES["backend"]
        # A worker as `up` ran it before: the one volume with every secret at /run/secrets.
        old = client.containers.run(
            image,
            ["sh", "-c", "sleep 120"],
            name=f"{project}-worker-1",
            detach=True,
            user="0",
            network_mode="none",
            labels={"io.mimir.project": project, "io.mimir.service": "worker"},
            volumes={legacy: {"bind": "/run/secrets", "mode": "rw"}},
        )
        assert (
            _exec(old, ["sh", "-c", "echo -n old-password > /run/secrets/mimir_redis_password"])[0]
            == 0
        )
        with pytest.raises(ClusterError, match=r"mount every secret .* run 'mimir cluster down"):
            asyncio.run(cluster.up(1))
        assert [c.name for c in cluster._containers()] == [old.name]  # nothing started
        old.remove(force=True, v=True)  # what `down` does
        # The next `up` takes the password over into the new volumes and drops the old one.
        cluster._ensure_network_and_volumes(topology, _Created())
        cluster._fill_secrets(topology)
        assert cluster.redis_password == "old-password"
        names = {v.name for v in cluster._project_volumes()}
        assert legacy not in names
        assert f"{project}_secrets_redis_password" in names
        with pytest.raises(docker.errors.NotFound):
            client.volumes.get(volume.id)
    finally:
        asyncio.run(cluster.clean())
        cluster.close()


def test_up_on_a_redis_from_before_passwords_says_what_to_do() -> None:
    project = f"{PROJECT}-old"
    cluster = DockerBackend(project, api_port=free_port(), start_timeout=30)
    client = cluster._connect()
    image = cluster.images.resolve_redis_image(lambda *_: None, False)
    # A Redis as `up` ran it before passwords: no configuration file, no password.
    old = client.containers.run(
        image,
        ["redis-server", "--protected-mode", "no"],
        name=f"{project}-redis",
        detach=True,
        network_mode="none",
        labels={"io.mimir.project": project, "io.mimir.service": "redis"},
    )
    try:
        with pytest.raises(
            ClusterError, match="started before Redis passwords: run 'mimir cluster down"
        ):
            asyncio.run(cluster.up(1))
        assert [c.name for c in cluster._containers()] == [old.name]  # nothing started
    finally:
        asyncio.run(cluster.clean())
        cluster.close()
