"""The Swarm backend on a real three-node swarm (tests/swarm/conftest.py): images reach the
workers through the in-swarm registry, the cluster is hardened, and 500 jobs go through a
node drain and a scale-up, each run once.

What the spike (two nodes, before the backend existed) found on this machine, and what the
test therefore relies on:

- The kernel has no IPVS (``/proc/net/ip_vs`` is missing; the inner dockerds log "error
  reading the kernel parameter net.ipv4.vs.…" and, on a joining node, "Failed creating
  ingress network: failed to find a load balancer IP"). So no routing mesh and no VIPs:
  the ingress network is removed, every service is ``endpoint_mode: dnsrr`` with host-mode
  ports (the backend's default without ``--routing-mesh``).
- VXLAN between the nested dockerds works: the overlay's DNS (``tasks.<service>``) lists
  the tasks of both nodes and a TCP connect from a task on one node to a task on the other
  is answered (refused by the port, not lost), with the nodes on a plain bridge network.
- A service image given by ID (``sha256:…``) is never pulled: a node that lacks it rejects
  the task ("No such image: sha256:…") and the swarm places it elsewhere; so the workers
  on other nodes need a registry.
- The registry (Debian's docker-registry on the base image, pinned to the manager,
  host-mode port 5000): the manager's own dockerd pushes to ``<manager address>:5000``
  (host mode reaches the local task), and a node started with ``--insecure-registry
  <subnet>`` pulls from it. Debian's stock ``/etc/docker/registry/config.yml`` turns
  htpasswd auth on (``/v2/`` answers 401, a push fails "no basic auth credentials"):
  ``REGISTRY_AUTH=`` (empty) in the environment turns it off.
- Node containers start in ~5 s (overlay2 nests on their /var/lib/docker volume), join in
  ~1 s; loading an image archive into a node is ``docker save | docker load`` over its
  fixture socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import re
import secrets
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from mimir.app.cluster.base import ClusterError, ClusterStatus, ServiceStatus
from mimir.app.cluster.cli import main as cluster_main
from mimir.app.cluster.selection import docker_engine_answers
from mimir.app.cluster.swarm_backend import SwarmBackend
from mimir.app.cluster.topology import API_TOKEN_FILE, REDIS_PASSWORD_FILE
from tests.cluster.conftest import ClusterAPI
from tests.helpers import wait_until
from tests.swarm.conftest import NODE_NAMES, Swarm

pytestmark = [
    pytest.mark.docker,
    pytest.mark.slow,
    pytest.mark.timeout(900),
    pytest.mark.skipif(not docker_engine_answers(), reason="no Docker engine answers"),
]

PROJECT = "mimirswarm"
API_PORT = 18080
JOBS = 500
#: Seconds each job sleeps: long enough that the drain and the scale happen mid-run.
JOB_SECONDS = 0.3
SERVICE_LABEL = "com.docker.swarm.service.name"
#: The environment of this machine that would change what the backend does.
SCRUBBED = (
    "DOCKER_HOST", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH", "DOCKER_CONTEXT",
    "MIMIR_API_TOKEN", "MIMIR_API_TOKEN_FILE", "MIMIR_PROJECT", "MIMIR_PORT",
    "MIMIR_CLUSTER_BACKEND", "MIMIR_REDIS_IMAGE",
)  # fmt: skip


class Clock:
    """Per-stage seconds, printed as the test goes and at the end."""

    def __init__(self, timings: dict[str, float]) -> None:
        self.timings = dict(timings)
        self.started = self.stage = time.monotonic()

    def __call__(self, name: str) -> None:
        now = time.monotonic()
        self.timings[name] = round(now - self.stage, 1)
        self.stage = now
        print(f"stage {name}: {self.timings[name]} s", flush=True)

    def progress(self, step: str, message: str) -> None:
        print(f"[{time.monotonic() - self.started:6.1f}] {step}: {message}", flush=True)


def _row(status: ClusterStatus, name: str) -> ServiceStatus:
    return next(s for s in status.services if s.name == name)


def _containers(swarm: Swarm, service: str) -> list[tuple[str, Any]]:
    """(node, container) of every running task container of ``<project>_<service>``."""
    found = []
    for name, node in swarm.nodes.items():
        for container in node.engine().containers.list(
            filters={"label": f"{SERVICE_LABEL}={PROJECT}_{service}"}
        ):
            found.append((name, container))
    return found


def _check_hardened(node: str, container: Any, secret_files: list[str]) -> None:
    """What every Mimir task container gets (docker inspect, and its PID 1's status)."""
    where = f"{container.name} on {node}"
    config, host = container.attrs["Config"], container.attrs["HostConfig"]
    env = config.get("Env") or []
    assert not [e for e in env if e.startswith(("MIMIR_API_TOKEN=", "REDIS_PASSWORD="))], where
    assert not [e for e in env if re.match(r"REDIS_URL=redis://[^/]*:[^/]*@", e)], where
    user = str(config.get("User") or "")
    assert user and user.split(":")[0] not in ("root", "0"), (where, user)
    assert host["ReadonlyRootfs"] is True, where
    assert "ALL" in (host.get("CapDrop") or []), (where, host.get("CapDrop"))
    assert (host.get("PidsLimit") or 0) > 0, (where, host.get("PidsLimit"))
    assert host["Memory"] > 0 and host["NanoCpus"] > 0, where
    status = container.exec_run(["cat", "/proc/1/status"]).output.decode()
    assert re.search(r"^NoNewPrivs:\s+1$", status, re.M), (where, status)
    for path in secret_files:
        probe = container.exec_run(["test", "-r", path])
        assert probe.exit_code == 0, f"{where}: {path} not readable"


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in SCRUBBED:
        monkeypatch.delenv(name, raising=False)
    yield


def test_a_three_node_swarm_runs_500_jobs_through_a_drain_and_a_scale(
    swarm: Swarm,
    clean_env: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = Clock(swarm.timings)
    print("fixture stages (s):", swarm.timings, flush=True)
    manager = swarm.manager
    engine = manager.engine()
    options: dict[str, Any] = dict(
        docker_host=swarm.docker_host, api_port=API_PORT, worker_concurrency=4, grace=15,
        start_timeout=180,
    )  # fmt: skip

    # Swarm publishes on every address of the node (moby#32299): no token, no start,
    # and nothing reaches the engine.
    refused = SwarmBackend(PROJECT, **options)
    with pytest.raises(ClusterError, match="32299"):
        asyncio.run(refused.up(3, clock.progress))
    refused.close()
    assert engine.services.list() == []

    token = secrets.token_urlsafe(24)
    backend = SwarmBackend(PROJECT, api_token=token, **options)
    cleaned = False
    try:
        refs = asyncio.run(backend.push_images(clock.progress))
        registry = f"{manager.address}:5000/"
        assert refs and all(ref.startswith(registry) for ref in refs.values()), refs
        clock("push")

        status = asyncio.run(backend.up(3, clock.progress))
        clock("up")
        assert status.backend == "swarm"
        for name in ("redis", "backend"):
            assert _row(status, name).nodes == {NODE_NAMES[0]: 1}, _row(status, name)
        workers = _row(status, "worker")
        assert (workers.replicas, workers.health) == (3, "healthy"), workers
        assert len(workers.nodes) >= 2, f"the workers did not spread: {workers.nodes}"
        # Workers on other nodes ran images pulled from the in-swarm registry.
        for service in engine.services.list(filters={"label": f"io.mimir.project={PROJECT}"}):
            image = service.attrs["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"]
            if not service.name.endswith("_registry"):
                # Pinned: a later task runs this image whatever the tag names by then.
                assert image.startswith(registry) and "@sha256:" in image, (service.name, image)
        assert backend.api_url == f"http://{manager.address}:{API_PORT}"
        unauthorized = httpx.get(f"{backend.api_url}/api/v1/workers", timeout=10)
        assert unauthorized.status_code == 401, unauthorized.text
        # Another token: refused at once (the secret's sha256 label), nothing changed.
        other = SwarmBackend(PROJECT, api_token=token + "-new", **options)
        with pytest.raises(ClusterError, match="API token differs"):
            asyncio.run(other.up(3, clock.progress))
        other.close()
        assert _row(asyncio.run(backend.status()), "worker").replicas == 3

        # Hardening, by docker inspect on the node running each task.
        checked = 0
        for service, files in (
            ("redis", [REDIS_PASSWORD_FILE]),
            ("backend", [API_TOKEN_FILE, REDIS_PASSWORD_FILE]),
            ("worker", [REDIS_PASSWORD_FILE]),
        ):
            found = _containers(swarm, service)
            assert found, f"no running container of {service}"
            for node, container in found:
                _check_hardened(node, container, files)
                checked += 1
        for _node, container in _containers(swarm, "worker"):
            probe = container.exec_run(["test", "-e", API_TOKEN_FILE])
            assert probe.exit_code != 0, "a worker can read the API token"
        assert checked >= 5
        clock("security")

        api = ClusterAPI(backend.api_url, token)
        ids: list[str] = []
        lock = threading.Lock()
        errors: list[BaseException] = []

        def enqueue(count: int) -> None:
            client = ClusterAPI(backend.api_url, token)
            try:
                got = client.enqueue(count, seconds=JOB_SECONDS)
                with lock:
                    ids.extend(got)
            except BaseException as exc:  # reported below
                errors.append(exc)
            finally:
                client.close()

        threads = [threading.Thread(target=enqueue, args=(JOBS // 4,)) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors, errors
        assert len(set(ids)) == JOBS
        clock("enqueue")

        def succeeded() -> int:
            response = api.client.get("/api/v1/queue/status")
            assert response.status_code == 200, response.text
            return int(response.json()["totals"]["succeeded"])

        wait_until(lambda: succeeded() >= 100, timeout=120, message="100 jobs succeeded")
        drained = NODE_NAMES[2]
        swarm.drain(drained)
        status = asyncio.run(backend.scale(5, clock.progress, wait=False))
        print(f"drained {drained} at {succeeded()} succeeded; scaling to 5", flush=True)
        clock("drain+scale")

        records = api.wait_finished(ids, timeout=240)
        clock("jobs")
        states = {r["status"] for r in records.values()}
        assert states == {"succeeded"}, {i: r["status"] for i, r in records.items()}
        assert len(records) == JOBS
        twice = {i: r["attempts"] for i, r in records.items() if r["attempts"] != 1}
        assert not twice, f"jobs run more than once: {twice}"
        assert succeeded() == JOBS  # each ended exactly once
        # Which nodes ran them: a worker id is worker-<pool>-<slot>-<task id>-<pid>.
        ids_to_node = {}
        node_names = swarm.node_ids()
        for service in engine.services.list(filters={"label": f"io.mimir.project={PROJECT}"}):
            for task in service.tasks():
                ids_to_node[task["ID"]] = node_names.get(task.get("NodeID", ""), "?")
        ran_on = set()
        for record in records.values():
            task_id = next((t for t in ids_to_node if t in record["worker_id"]), None)
            assert task_id is not None, record["worker_id"]
            ran_on.add(ids_to_node[task_id])
        assert len(ran_on) >= 2, ran_on

        def settled() -> bool:
            row = _row(asyncio.run(backend.status()), "worker")
            return row.replicas == 5 and drained not in row.nodes and row.health == "healthy"

        wait_until(settled, timeout=120, interval=1.0, message="5 workers off the drained node")
        status = asyncio.run(backend.status())
        assert set(_row(status, "worker").nodes) <= set(NODE_NAMES[:2]), status
        assert not [
            c.name
            for c in swarm.nodes[drained]
            .engine()
            .containers.list(filters={"label": f"io.mimir.project={PROJECT}"})
        ]
        clock("settle")

        monkeypatch.setenv("MIMIR_API_TOKEN", token)
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            code = cluster_main(
                ["status", "--backend", "swarm", "--docker-host", swarm.docker_host,
                 "--project", PROJECT]
            )  # fmt: skip
        out = printed.getvalue()
        print(out)
        assert code == 0, out
        assert "NODES" in out and NODE_NAMES[0] in out, out
        clock("cli")
        api.close()

        asyncio.run(backend.clean(clock.progress))
        cleaned = True
        left = swarm.project_leftovers(PROJECT)
        assert not any(left.values()), left

        # Workers have no volumes on a swarm (tmpfs), redis and backend are on the manager:
        # nothing of the project may stay on any node.
        on_nodes: dict[str, dict[str, list[str]]] = {}

        def nodes_empty() -> bool:  # the workers remove their task containers on their own
            for name, node in swarm.nodes.items():
                objects = node.project_objects(PROJECT)
                on_nodes[name] = {k: v for k, v in objects.items() if v}
            return not any(on_nodes.values())

        with contextlib.suppress(AssertionError):
            wait_until(nodes_empty, timeout=30, interval=0.5)
        assert not any(on_nodes.values()), f"left on the nodes after clean: {on_nodes}"
        assert not set(swarm.manager.project_objects(PROJECT)["volumes"])
        clock("clean")
        total = round(time.monotonic() - clock.started, 1)
        print("stage timings (s):", clock.timings, "test total:", total, flush=True)
    finally:
        if not cleaned:
            with contextlib.suppress(Exception):
                asyncio.run(backend.clean())
        backend.close()
