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
from mimir.app.cluster.swarm_backend import SwarmBackend, _SwarmCreated, render_hostname
from mimir.app.cluster.swarm_spec import service_specs
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


def _backend(settings: Settings, client: Any) -> SwarmBackend:
    backend = SwarmBackend("swarmunit", settings, docker_host="unix:///x.sock", api_token="t")
    backend._connect = lambda: client  # type: ignore[method-assign]
    return backend


def test_pushed_images_are_pinned_to_the_digest_the_engine_pushed(settings: Settings) -> None:
    digests = {"reg:5000/mimir-aip:worker-latest": "sha256:" + "a" * 64}
    recorded = ["reg:5000/mimir-aip@sha256:" + "a" * 64]
    client = SimpleNamespace(
        api=SimpleNamespace(
            inspect_distribution=lambda ref: {"Descriptor": {"digest": digests[ref]}}
        ),
        images=SimpleNamespace(get=lambda name: SimpleNamespace(attrs={"RepoDigests": recorded})),
    )
    backend = _backend(settings, client)
    pushed = {"mimir-aip:worker-latest": "reg:5000/mimir-aip:worker-latest"}
    backend.images = SimpleNamespace(push_images=lambda registry, local, report: pushed)  # type: ignore[assignment]
    refs = backend._push("reg:5000", ["mimir-aip:worker-latest"], lambda *_: None)
    pinned = "reg:5000/mimir-aip:worker-latest@sha256:" + "a" * 64
    assert refs == {"mimir-aip:worker-latest": pinned}
    # The specs run exactly that image.
    topology = backend._swarm_topology(1, "mimir-aip:worker-latest")
    specs = service_specs(
        topology,
        images={**refs, "worker": pinned, "backend": pinned, "redis": pinned},
        secrets={"mimir_api_token": "s1", "mimir_redis_password": "s2"},
        data_constraint="node.id==n1",
        grace=5,
    )
    assert {spec["image"] for spec in specs.values()} == {pinned}
    # The registry holds another image under the tag: refused.
    digests["reg:5000/mimir-aip:worker-latest"] = "sha256:" + "b" * 64
    with pytest.raises(ClusterError, match="not the image pushed"):
        backend._push("reg:5000", ["mimir-aip:worker-latest"], lambda *_: None)


def test_a_changed_api_token_is_refused_and_secrets_carry_a_hash_not_the_value(
    settings: Settings,
) -> None:
    made: list[dict[str, Any]] = []

    def create(name: str, data: bytes, labels: dict[str, str]) -> SimpleNamespace:
        made.append({"name": name, "data": data, "labels": labels})
        return SimpleNamespace(id=f"id-{name}", name=name, attrs={"Spec": {"Labels": labels}})

    def listed(filters: dict[str, str]) -> list[SimpleNamespace]:
        return [
            SimpleNamespace(
                id=f"id-{m['name']}", name=m["name"], attrs={"Spec": {"Labels": m["labels"]}}
            )
            for m in made
            if m["name"] == filters["name"]
        ]

    client = SimpleNamespace(secrets=SimpleNamespace(list=listed, create=create))
    backend = _backend(settings, client)
    created = _SwarmCreated()
    first = backend._ensure_secret("mimir_api_token", lambda: "token-1", created, same=True)
    assert first == "id-swarmunit_mimir_api_token" and created.secrets == [
        "swarmunit_mimir_api_token"
    ]
    labels = made[0]["labels"]
    assert "token-1" not in str(labels) and len(labels["io.mimir.secret-sha256"]) == 64
    again = backend._ensure_secret("mimir_api_token", lambda: "token-1", created, same=True)
    assert again == first and len(made) == 1
    with pytest.raises(ClusterError, match=r"API token differs .* `mimir cluster down` then `up`"):
        backend._ensure_secret("mimir_api_token", lambda: "token-2", created, same=True)
    # The generated Redis password is reused whatever a new draw would be.
    password = backend._ensure_secret("mimir_redis_password", lambda: "p1", created)
    assert backend._ensure_secret("mimir_redis_password", lambda: "p2", created) == password
    assert len(made) == 2


def _stamped(task: dict[str, Any], created: str, err: str = "") -> dict[str, Any]:
    task = {**task, "CreatedAt": created, "DesiredState": "shutdown"}
    if err:
        task["Status"] = {**task["Status"], "Err": err}
    return task


def test_status_shows_a_crash_looping_service_failed_with_its_error(settings: Settings) -> None:
    mine = {LABEL_PROJECT: "swarmunit"}
    services = [
        _service("swarmunit_redis", {**mine, LABEL_SERVICE: "redis"}, 1),
        _service("swarmunit_backend", {**mine, LABEL_SERVICE: "backend"}, 1),
        _service("swarmunit_worker", {**mine, LABEL_SERVICE: "worker", LABEL_POOL: "default"}, 2),
    ]

    def at(task: dict[str, Any], second: int, desired: str = "running") -> dict[str, Any]:
        return {**task, "CreatedAt": f"2026-01-01T10:00:{second:02d}.5Z", "DesiredState": desired}

    rejected = _task("b1", 1, "n1", "rejected")
    rejected["Status"]["Err"] = "No such image: reg:5000/mimir-aip:server-latest@sha256:ab"
    tasks = {
        "id-swarmunit_redis": [at(_task("r1", 1, "n1"), 1)],
        # Crash loop: failed, rejected, and the swarm's next try pending (its restart delay).
        "id-swarmunit_backend": [
            at(_task("b0", 1, "n1", "failed"), 2, "shutdown"),
            at(rejected, 5, "shutdown"),
            at(_task("b2", 1, "n1", "pending"), 7),
        ],
        # A scale's stopped task, then a task still pulling: starting, not failed.
        "id-swarmunit_worker": [
            at(_task("w0", 1, "n1", "shutdown"), 3, "shutdown"),
            at(_task("w1", 1, "n2", "preparing"), 8),
        ],
    }
    client = SimpleNamespace(
        services=SimpleNamespace(list=lambda filters: services),
        nodes=SimpleNamespace(list=lambda: []),
        api=SimpleNamespace(tasks=lambda filters: list(tasks[filters["service"]])),
    )
    backend = _backend(settings, client)
    rows = {r.name: r for r in asyncio.run(backend.status()).services}
    assert rows["backend"].state == "failed"
    assert rows["backend"].health.startswith("No such image: reg:5000/")
    assert (rows["worker"].state, rows["worker"].replicas) == ("starting", 0)
    assert (rows["redis"].state, rows["redis"].replicas) == ("running", 1)


def test_failed_tasks_are_told_by_the_managers_timestamps_only(settings: Settings) -> None:
    # The swarm's clock is years behind this machine's: failures are still seen.
    service = SimpleNamespace(
        id="id-w",
        name="swarmunit_worker",
        attrs={
            "Spec": {"Labels": {LABEL_PROJECT: "swarmunit", LABEL_SERVICE: "worker"}},
            "CreatedAt": "2001-01-01T09:00:00Z",
            "UpdatedAt": "2001-01-01T10:00:00Z",
        },
    )
    tasks = [
        _stamped(_task("before", 1, "n1", "failed"), "2001-01-01T09:30:00Z", "old"),
        _stamped(_task("seen", 2, "n1", "failed"), "2001-01-01T10:00:01Z", "seen"),
    ]
    client = SimpleNamespace(
        services=SimpleNamespace(list=lambda filters: [service]),
        nodes=SimpleNamespace(list=lambda: []),
        api=SimpleNamespace(
            tasks=lambda filters: list(tasks), service_logs=lambda *a, **k: [b"boom\n"]
        ),
    )
    backend = _backend(settings, client)
    backend._note_failures()
    assert backend._failed_task() is None  # before the update, or already failed
    tasks.append(_stamped(_task("new", 1, "n1", "failed"), "2001-01-01T10:00:02Z", "exit 3"))
    failed = backend._failed_task(["worker"])
    assert failed is not None and "swarmunit_worker.1" in str(failed) and "exit 3" in str(failed)
    assert backend._failed_task(["redis"]) is None
