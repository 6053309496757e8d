"""The autoscaler inside real server processes over HTTP, against a real redis-server.

The scaling command is a small script (``MIMIR_AUTOSCALE_COMMAND``) that records its
arguments: the loop is tested end to end (real jobs enqueued, real lease, real
subprocess, the decision in the API and on the event stream) without starting workers;
scaling real local workers is the cluster's integration test."""

from __future__ import annotations

import asyncio
import json
import shlex
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from mimir.core.pools import ClusterFile, pools_to_env
from mimir.core.queue import JobQueue, JobSpec, connect
from mimir.core.settings import Settings
from mimir.server.autoscaler import Autoscaler
from tests.helpers import RedisServer, ServerProcess, wait_until

RECORDER = """\
import json, os, sys
with open({path!r}, "a") as out:
    out.write(json.dumps({{"args": sys.argv[1:], "ppid": os.getppid()}}) + "\\n")
if {fail!r}:
    sys.stderr.write("scaling refused: the engine said no\\n")
    sys.exit(3)
"""

CLUSTER = ClusterFile.model_validate(
    {
        "autoscaler": {"period": 0.5},
        "pools": {
            "default": {
                "min": 0,
                "max": 4,
                "autoscale": {"target_backlog": 10, "cooldown_up": 2},
            },
            "slow": {"queues": ["slow"], "min": 0, "max": 2},
        },
    }
)


def recorder(tmp_path: Path, *, fail: bool = False) -> tuple[str, Path]:
    """A scaling command that records each call's arguments (one JSON list a line)."""
    calls = tmp_path / ("failed-calls.jsonl" if fail else "calls.jsonl")
    script = tmp_path / ("fail_scale.py" if fail else "scale.py")
    script.write_text(RECORDER.format(path=str(calls), fail=fail))
    return shlex.join([sys.executable, str(script)]), calls


def calls_of(path: Path) -> list[dict[str, Any]]:
    """Each call: its ``args`` and ``ppid`` (the server that ran it)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def enqueue_burst(redis_url: str, count: int) -> None:
    """``count`` jobs enqueued at once (one call), before any evaluation can see part."""

    async def burst() -> None:
        queue = JobQueue(connect(redis_url))
        try:
            await queue.enqueue_many([JobSpec(payload={}) for _ in range(count)])
        finally:
            await queue.aclose()

    asyncio.run(burst())


@pytest.fixture
def cluster_server(
    make_server: Callable[..., ServerProcess], redis_server: RedisServer, tmp_path: Path
) -> Callable[..., ServerProcess]:
    """Start a server as `mimir cluster up` would (backend, project, pools) with the
    recording scaling command."""

    def start(*, fail: bool = False, **env: str) -> ServerProcess:
        command, _ = recorder(tmp_path, fail=fail)
        settings = {
            "MIMIR_CLUSTER_BACKEND": "local",
            "MIMIR_PROJECT": "autoscaled",
            "MIMIR_POOLS": pools_to_env(CLUSTER),
            "MIMIR_AUTOSCALE_COMMAND": command,
            **env,
        }
        return make_server(redis_url=redis_server.url, **settings).start(wait_for_redis=True)

    return start


def enqueue(client: httpx.Client, count: int, queue: str = "default") -> None:
    for _ in range(count):
        answer = client.post(
            "/api/v1/queue/pipelines/enqueue",
            json={"pipeline_file": "test_pipeline.yaml", "context": {"input": "x"}, "queue": queue},
        )
        assert answer.status_code == 202, answer.text


class Events:
    """The server's event stream, read in a thread: ``(kind, data)`` as they come."""

    def __init__(self, base_url: str) -> None:
        self.seen: list[tuple[str, Any]] = []
        self.connected = threading.Event()
        self._stop = False
        self._thread = threading.Thread(target=self._listen, args=(base_url,), daemon=True)
        self._thread.start()
        assert self.connected.wait(15), "no first stats event"

    def _listen(self, base_url: str) -> None:
        with httpx.stream("GET", f"{base_url}/api/v1/events", timeout=30) as answer:
            kind = ""
            for line in answer.iter_lines():
                if self._stop:
                    return
                if line.startswith("event: "):
                    kind = line.removeprefix("event: ")
                elif line.startswith("data: "):
                    self.seen.append((kind, json.loads(line.removeprefix("data: "))))
                    self.connected.set()

    def of(self, kind: str) -> list[Any]:
        return [data for k, data in list(self.seen) if k == kind]

    def close(self) -> None:
        self._stop = True


@pytest.fixture
def client_of() -> Iterator[Callable[[ServerProcess], httpx.Client]]:
    clients: list[httpx.Client] = []

    def make(server: ServerProcess) -> httpx.Client:
        client = httpx.Client(base_url=server.base_url, timeout=30.0)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def state(client: httpx.Client) -> dict[str, Any]:
    answer = client.get("/api/v1/autoscaler")
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def test_a_server_started_alone_has_autoscaling_off_and_says_why(
    api_client: httpx.Client,
) -> None:
    body = state(api_client)
    assert body["enabled"] is False
    assert "MIMIR_CLUSTER_BACKEND" in body["reason"]
    assert body["leader"] is None  # it never takes the lease
    assert body["decisions"] == []
    default = body["pools"]["default"]
    assert default["queues"] == ["default"] and default["policy"] is None
    assert default["replicas"] == {"wanted": 0, "running": 0}
    pools = api_client.get("/api/v1/pools")
    assert pools.status_code == 200, pools.text
    assert pools.json()["pools"]["default"]["queued"] == 0


def test_a_docker_cluster_without_engine_access_has_autoscaling_off_and_says_why(
    cluster_server: Callable[..., ServerProcess],
    client_of: Callable[[ServerProcess], httpx.Client],
) -> None:
    # What `mimir cluster up` on Docker gives a server whose cluster file autoscales
    # nothing: the backend's name, but no engine (MIMIR_DOCKER_INSIDE unset).
    body = state(client_of(cluster_server(MIMIR_CLUSTER_BACKEND="docker")))
    assert body["enabled"] is False and body["leader"] is None
    assert "no access to the Docker engine" in body["reason"]


def test_a_swarm_cluster_has_autoscaling_off_and_says_why(redis_server: RedisServer) -> None:
    # The Swarm backend sets MIMIR_CLUSTER_BACKEND=swarm and refuses autoscaled pools. The
    # API serves the reason as the tests above show: here the reason alone, no server.
    env = {
        "MIMIR_CLUSTER_BACKEND": "swarm",
        "MIMIR_PROJECT": "autoscaled",
        "MIMIR_POOLS": pools_to_env(CLUSTER),
        "REDIS_URL": redis_server.url,
    }
    redis = connect(redis_server.url)
    try:
        autoscaler = Autoscaler(Settings.from_env(env), redis, environ=env)
        assert not autoscaler.enabled
        assert autoscaler.reason == "autoscaling is off: autoscaled pools are not on Swarm yet"
    finally:
        asyncio.run(redis.aclose())


def test_a_burst_scales_the_pool_up_through_the_command_and_is_recorded(
    cluster_server: Callable[..., ServerProcess],
    redis_server: RedisServer,
    client_of: Callable[[ServerProcess], httpx.Client],
    tmp_path: Path,
) -> None:
    server = cluster_server()
    client = client_of(server)
    _, calls = recorder(tmp_path)
    redis_url = redis_server.url
    assert server.process is not None
    body = state(client)
    assert body["enabled"] is True and body["reason"] is None
    assert body["leader"]["owner"] == body["server"]
    assert body["pools"]["default"]["policy"]["target_backlog"] == 10
    assert body["pools"]["slow"]["policy"] is None  # scaled by hand only
    events = Events(server.base_url)
    try:
        enqueue_burst(redis_url, 45)  # no workers: they stay queued; 45 / 10 → 5, max 4
        wait_until(lambda: calls_of(calls), timeout=20, message="the scaling command")
        assert calls_of(calls)[0]["ppid"] == server.process.pid
        assert calls_of(calls)[0]["args"] == [
            *("--pool", "default", "4"),
            *("--project", "autoscaled", "--backend", "local"),
            "--no-wait",  # the next evaluations read the heartbeats
        ]
        decided = wait_until(
            lambda: [d for d in state(client)["decisions"] if d["outcome"] == "ok"],
            timeout=20,
            message="the decision's outcome",
        )
        decision = decided[-1]
        assert (decision["pool"], decision["from"], decision["to"]) == ("default", 0, 4)
        assert decision["figures"]["queued"] == 45
        assert "wake from zero" in decision["reason"]
        assert decision["server"] == body["server"]
        scale = wait_until(lambda: events.of("scale"), timeout=20, message="a scale event")
        assert scale[0]["kind"] == "decision" and scale[0]["to"] == 4
        assert scale[0]["id"] == decision["id"]
        wait_until(
            lambda: any(e["kind"] == "result" for e in events.of("scale")),
            timeout=20,
            message="the result event",
        )
        pool = state(client)["pools"]["default"]
        # No worker came (the command only recorded): wanted 4 while it settles.
        assert pool["replicas"] == {"wanted": 4, "running": 0}
        assert pool["last_change"] is not None and pool["last_error"] is None
        pools = client.get("/api/v1/pools").json()["pools"]
        assert pools["default"]["queued"] == 45 and pools["default"]["replicas"]["wanted"] == 4
        assert pools["slow"]["queued"] == 0 and pools["slow"]["autoscaled"] is False
    finally:
        events.close()


def test_a_failing_command_is_recorded_and_the_loop_goes_on(
    cluster_server: Callable[..., ServerProcess],
    client_of: Callable[[ServerProcess], httpx.Client],
    tmp_path: Path,
) -> None:
    server = cluster_server(fail=True)
    client = client_of(server)
    _, calls = recorder(tmp_path, fail=True)
    enqueue(client, 3)
    failed = wait_until(
        lambda: [d for d in state(client)["decisions"] if d["outcome"] == "failed"],
        timeout=20,
        message="a failed decision",
    )
    assert "exit code 3" in failed[-1]["error"] and "engine said no" in failed[-1]["error"]
    assert "engine said no" in state(client)["pools"]["default"]["last_error"]
    # The pool still runs nothing: the loop tries again, after cooldown_up (2 s), not
    # each period (0.5 s).
    wait_until(lambda: len(calls_of(calls)) >= 2, timeout=20, message="a second attempt")
    first, second = (
        datetime.fromisoformat(d["time"]).timestamp()
        for d in reversed(state(client)["decisions"][:2])
    )
    assert second - first >= 2.0
    assert "engine said no" in server.output(200)


def test_policies_are_validated_and_shared_through_redis(
    cluster_server: Callable[..., ServerProcess],
    client_of: Callable[[ServerProcess], httpx.Client],
) -> None:
    first, second = cluster_server(), cluster_server()
    one, two = client_of(first), client_of(second)
    bad = one.put("/api/v1/autoscaler/pools/default", json={"min": 3, "max": 2})
    assert bad.status_code == 422, bad.text
    assert bad.json()["detail"][0]["field"] == "max"
    bad = one.put("/api/v1/autoscaler/pools/default", json={"target_backlog": -1})
    assert bad.status_code == 422, bad.text
    assert bad.json()["detail"][0]["field"] == "target_backlog"
    bad = one.put("/api/v1/autoscaler/pools/nosuch", json={})
    assert bad.status_code == 404, bad.text
    assert bad.json()["detail"][0]["field"] == "pool"
    assert "default, slow" in bad.json()["error"]
    bad = one.put("/api/v1/autoscaler/pools/default", json={"target_backlgo": 5})
    assert bad.status_code == 422 and bad.json()["detail"][0]["field"] == "target_backlgo"
    # Above the file's max: the backends would refuse every scale command it made.
    bad = one.put("/api/v1/autoscaler/pools/slow", json={"target_backlog": 5, "max": 3})
    assert bad.status_code == 422 and bad.json()["detail"][0]["field"] == "max", bad.text
    assert "cluster file (2)" in bad.json()["error"]
    good = one.put(
        "/api/v1/autoscaler/pools/slow",
        json={"target_backlog": 5, "cooldown_down": 120, "min": 1, "max": 2},
    )
    assert good.status_code == 200, good.text
    assert good.json()["policy"]["target_backlog"] == 5 and good.json()["min"] == 1
    # The other server sees it at once (Redis), and the first pool was left alone.
    pools = state(two)["pools"]
    assert pools["slow"]["policy"]["cooldown_down"] == 120 and pools["slow"]["min"] == 1
    assert pools["default"]["policy"]["target_backlog"] == 10
    # A server restarted with the same MIMIR_POOLS keeps the change (no re-seed).
    second.stop()
    third = client_of(cluster_server())
    assert state(third)["pools"]["slow"]["policy"]["target_backlog"] == 5


def test_two_servers_only_the_lease_holder_acts(
    cluster_server: Callable[..., ServerProcess],
    client_of: Callable[[ServerProcess], httpx.Client],
    tmp_path: Path,
) -> None:
    first, second = cluster_server(), cluster_server()
    one, two = client_of(first), client_of(second)
    _, calls = recorder(tmp_path)
    leader = wait_until(lambda: state(one)["leader"], timeout=20, message="a leader")
    assert state(two)["leader"]["owner"] == leader["owner"]
    servers = {state(one)["server"], state(two)["server"]}
    assert len(servers) == 2 and leader["owner"] in servers
    enqueue(one, 30)
    wait_until(lambda: calls_of(calls), timeout=20, message="the scaling command")
    decisions = wait_until(lambda: state(two)["decisions"], timeout=20, message="a decision")
    assert {d["server"] for d in decisions} == {leader["owner"]}
    # One server acted: every scaling command is the lease holder's child.
    holder, other = (first, two) if state(one)["server"] == leader["owner"] else (second, one)
    assert holder.process is not None
    assert {call["ppid"] for call in calls_of(calls)} == {holder.process.pid}
    # The holder stops: the other takes the lease over.
    holder.stop()
    wait_until(
        lambda: (state(other)["leader"] or {}).get("owner") == state(other)["server"],
        timeout=20,
        message="the other server taking the lease",
    )


def test_the_real_scaling_command_is_called_with_arguments_it_accepts(
    make_server: Callable[..., ServerProcess],
    redis_server: RedisServer,
    client_of: Callable[[ServerProcess], httpx.Client],
) -> None:
    # No MIMIR_AUTOSCALE_COMMAND: `mimir cluster scale` itself, for a local cluster that
    # is not running. It parses the arguments and refuses with its own message.
    server = make_server(
        redis_url=redis_server.url,
        MIMIR_CLUSTER_BACKEND="local",
        MIMIR_PROJECT="notrunning",
        MIMIR_POOLS=pools_to_env(CLUSTER),
    ).start(wait_for_redis=True)
    client = client_of(server)
    enqueue(client, 1)
    failed = wait_until(
        lambda: [d for d in state(client)["decisions"] if d["outcome"] == "failed"],
        timeout=60,
        message="the command's end",
    )
    error = failed[-1]["error"]
    assert "usage:" not in error
    assert "no local cluster 'notrunning' is running" in error
