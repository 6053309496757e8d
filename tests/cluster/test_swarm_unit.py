"""The Swarm backend's argument handling and messages, without an engine.

The fake client below answers only what these checks read; the backend's real behaviour
on a swarm is tested on a real multi-node swarm (tests/swarm).
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from mimir.app.cluster import cli
from mimir.app.cluster.base import ClusterError
from mimir.app.cluster.swarm_backend import SwarmBackend, render_hostname
from mimir.app.cluster.topology import LABEL_POOL, LABEL_PROJECT, LABEL_SERVICE
from mimir.core.settings import Settings


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name in ("MIMIR_API_TOKEN", "MIMIR_API_TOKEN_FILE", "DOCKER_HOST"):
        monkeypatch.delenv(name, raising=False)
    return Settings.from_env()


class _NoEngine:
    def __call__(self) -> Any:
        raise AssertionError("the engine was called")


def _service(name: str, labels: dict[str, str], replicas: int) -> SimpleNamespace:
    return SimpleNamespace(
        id=f"id-{name}",
        name=name,
        attrs={"Spec": {"Name": name, "Labels": labels,
                        "Mode": {"Replicated": {"Replicas": replicas}}},
               "Endpoint": {"Ports": [{"TargetPort": 8080, "PublishedPort": 18080,
                                       "Protocol": "tcp"}]} if "backend" in name else {}},
    )  # fmt: skip


def _task(task_id: str, slot: int, node: str, state: str = "running") -> dict[str, Any]:
    return {"ID": task_id, "Slot": slot, "NodeID": node, "Status": {"State": state}}


def test_up_without_a_token_is_refused_before_any_call_to_the_engine(settings: Settings) -> None:
    backend = SwarmBackend("swarmunit", settings, docker_host="unix:///nonexistent.sock")
    backend._connect = _NoEngine()  # type: ignore[method-assign]
    with pytest.raises(ClusterError, match="moby#32299") as caught:
        asyncio.run(backend.up(1))
    assert "MIMIR_API_TOKEN" in str(caught.value)
    with pytest.raises(ClusterError, match="moby#32299"):
        asyncio.run(backend.scale(3))


def test_up_with_monitoring_is_not_on_swarm_yet(settings: Settings) -> None:
    backend = SwarmBackend(
        "swarmunit", settings, docker_host="unix:///x.sock", api_token="t", monitoring=True
    )
    backend._connect = _NoEngine()  # type: ignore[method-assign]
    with pytest.raises(ClusterError, match="not on swarm yet"):
        asyncio.run(backend.up(1))


@pytest.mark.parametrize(
    ("swarm", "expected"),
    [
        ({"LocalNodeState": "inactive"}, "docker swarm init"),
        ({"LocalNodeState": "active", "ControlAvailable": False}, "not a manager"),
    ],
)
def test_an_engine_that_is_no_manager_is_told_what_to_do(
    settings: Settings, swarm: dict[str, Any], expected: str
) -> None:
    backend = SwarmBackend("swarmunit", settings, docker_host="unix:///x.sock", api_token="t")
    client = SimpleNamespace(info=lambda: {"Swarm": swarm})
    backend._connect = lambda: client  # type: ignore[method-assign]
    with pytest.raises(ClusterError, match=expected) as caught:
        backend._manager()
    assert "--docker-host" in str(caught.value)


def test_status_rows_count_running_tasks_per_node(settings: Settings) -> None:
    backend = SwarmBackend("swarmunit", settings, docker_host="unix:///x.sock", api_token="t")
    mine = {LABEL_PROJECT: "swarmunit"}
    services = {
        "redis": _service("swarmunit_redis", {**mine, LABEL_SERVICE: "redis"}, 1),
        "backend": _service("swarmunit_backend", {**mine, LABEL_SERVICE: "backend"}, 1),
        "worker": _service(
            "swarmunit_worker", {**mine, LABEL_SERVICE: "worker", LABEL_POOL: "default"}, 4
        ),
    }
    tasks = {
        "redis": [_task("r1", 1, "n1")],
        "backend": [_task("b1", 1, "n1")],
        "worker": [
            _task("w1", 1, "n1"),
            _task("w2", 2, "n2"),
            _task("w3", 3, "n2"),
            _task("w4", 4, "n3", "preparing"),
        ],
    }
    nodes = {n: {"hostname": f"swarm-{n[-1]}", "addr": ""} for n in ("n1", "n2", "n3")}
    template = "{pool}-{{{{.Task.Slot}}}}-{{{{.Task.ID}}}}".format
    registered = {"default-1-w1", "default-2-w2", "default-3-w3"}
    rows = backend.status_rows(services, tasks, nodes, registered, lambda pool: template(pool=pool))
    by_name = {row.name: row for row in rows}
    assert [row.name for row in rows] == ["redis", "backend", "worker"]
    worker = by_name["worker"]
    assert (worker.state, worker.replicas, worker.wanted) == ("running", 3, 4)
    assert worker.nodes == {"swarm-1": 1, "swarm-2": 2}
    assert worker.health == "healthy"
    assert by_name["backend"].ports == {"8080/tcp": "0.0.0.0:18080"}
    assert by_name["redis"].nodes == {"swarm-1": 1}
    assert render_hostname("default-{{.Task.Slot}}-{{.Task.ID}}", 2, "w2") == "default-2-w2"


def test_status_without_services_shows_them_missing(settings: Settings) -> None:
    backend = SwarmBackend("swarmunit", settings, docker_host="unix:///x.sock", api_token="t")
    rows = backend.status_rows({}, {}, {}, None, None)
    assert [(r.name, r.state) for r in rows] == [
        ("redis", "missing"), ("backend", "missing"), ("worker", "missing"),
    ]  # fmt: skip


def test_restarting_one_worker_task_is_refused_naming_the_service(settings: Settings) -> None:
    backend = SwarmBackend("swarmunit", settings, docker_host="unix:///x.sock", api_token="t")
    backend._connect = _NoEngine()  # type: ignore[method-assign]
    with pytest.raises(ClusterError, match="not one task: restart worker ") as caught:
        asyncio.run(backend.restart("worker-3"))
    assert "swarm restarts a service" in str(caught.value)
    with pytest.raises(ClusterError, match="restart worker-slow "):
        asyncio.run(backend.restart("worker-slow-2"))


def test_the_cli_parses_the_swarm_options() -> None:
    args = cli._parser().parse_args(
        ["build", "--backend", "swarm", "--registry", "reg.example:5000", "--push"]
    )
    assert (args.backend, args.registry, args.push) == ("swarm", "reg.example:5000", True)
    up = cli._parser().parse_args(
        ["up", "--backend", "swarm", "--data-node", "swarm-1", "--routing-mesh"]
    )
    assert (up.data_node, up.routing_mesh) == ("swarm-1", True)
    options = cli._backend_options(up, "swarm")
    assert options["data_node"] == "swarm-1" and options["routing_mesh"] is True
