"""Workers by pool over HTTP: a real server, real worker processes, a real redis-server."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from mimir.core.pools import ClusterFile, PoolSpec, pools_to_env
from tests.helpers import RedisServer, ServerProcess, WorkerProcess, wait_until

pytestmark = pytest.mark.slow


def sleepy(seconds: float) -> dict:  # type: ignore[type-arg]
    """A pipeline whose one step sleeps ``seconds``."""
    step = {"name": "nap", "plugin": "Debug.sleep", "config": {"seconds": seconds}}
    return {"name": "sleepy", "steps": [step]}


@pytest.fixture
def make_worker(
    redis_server: RedisServer, data_dir: Path, tmp_path: Path
) -> Iterator[Callable[..., WorkerProcess]]:
    """Real workers on the server's Redis and data directory; killed at the end."""
    workers: list[WorkerProcess] = []

    def make(queues: str = "default", concurrency: int = 1, **env: str) -> WorkerProcess:
        worker = WorkerProcess(
            {
                "REDIS_URL": redis_server.url,
                "MIMIR_DATA_DIR": str(data_dir),
                # Beats kept 1.5 s: a busy test machine does not make one lapse.
                "MIMIR_WORKER_HEARTBEAT": "0.5",
                **env,
            },
            concurrency=concurrency,
            queues=queues,
            log_path=tmp_path / f"worker-{len(workers)}.log",
        )
        workers.append(worker)
        return worker.start()

    yield make
    for worker in workers:
        worker.kill()


def enqueue(client: httpx.Client, queue: str = "default", seconds: float = 1.0) -> dict:  # type: ignore[type-arg]
    answer = client.post(
        "/api/v1/queue/pipelines/enqueue",
        json={"pipeline": sleepy(seconds), "queue": queue, "max_retries": 0},
    )
    assert answer.status_code == 202, answer.text
    return answer.json()  # type: ignore[no-any-return]


def job_status(client: httpx.Client, job_id: str) -> str:
    return str(client.get(f"/api/v1/queue/jobs/{job_id}").json()["status"])


def test_workers_are_grouped_by_pool(
    api_client: httpx.Client, make_worker: Callable[..., WorkerProcess]
) -> None:
    make_worker()
    make_worker()
    make_worker(queues="slow,bulk", MIMIR_WORKER_POOL="slow", MIMIR_WORKER_JOB_TYPES="pipeline")
    job = enqueue(api_client, "slow", seconds=30)
    wait_until(lambda: job_status(api_client, job["job_id"]) == "running", timeout=15)

    expected = {
        "default": {"workers": 2, "busy": 0, "draining": 0, "queues": ["default"]},
        "slow": {"workers": 1, "busy": 1, "draining": 0, "queues": ["bulk", "slow"]},
    }
    body = wait_until(
        lambda: (b := api_client.get("/api/v1/workers").json())["pools"] == expected and b,
        timeout=15,
        message="the workers' heartbeats to show their pools and the slow one's job",
    )
    slow = next(w for w in body["workers"] if w["pool"] == "slow")
    assert slow["job_types"] == ["pipeline"]


def test_drain_over_the_api_lets_the_running_job_finish_then_the_worker_exits_0(
    api_client: httpx.Client, make_worker: Callable[..., WorkerProcess]
) -> None:
    worker = make_worker()
    job = enqueue(api_client)
    wait_until(lambda: job_status(api_client, job["job_id"]) == "running", timeout=15)

    answer = api_client.post(f"/api/v1/workers/{worker.worker_id}/drain")
    assert answer.status_code == 202, answer.text
    assert answer.json() == {"worker_id": worker.worker_id, "action": "drain"}
    assert worker.wait(timeout=30) == 0, worker.output()
    assert job_status(api_client, job["job_id"]) == "succeeded"
    assert api_client.get("/api/v1/workers").json() == {"workers": [], "pools": {}}


def test_stop_over_the_api_hands_the_job_to_another_worker_which_runs_it_once(
    api_client: httpx.Client, make_worker: Callable[..., WorkerProcess]
) -> None:
    first = make_worker(MIMIR_WORKER_GRACE="60")
    job = enqueue(api_client, seconds=3)
    wait_until(lambda: job_status(api_client, job["job_id"]) == "running", timeout=15)

    answer = api_client.post(f"/api/v1/workers/{first.worker_id}/stop")
    assert answer.status_code == 202, answer.text
    assert answer.json() == {"worker_id": first.worker_id, "action": "stop"}
    assert first.wait(timeout=20) == 0, first.output()
    second = make_worker()
    done = api_client.get(f"/api/v1/queue/jobs/{job['job_id']}/wait", params={"timeout": "30s"})
    record = done.json()
    assert record["status"] == "succeeded", record
    assert record["worker_id"] == second.worker_id and record["attempts"] == 1
    assert api_client.get("/api/v1/queue/status").json()["totals"]["succeeded"] == 1


def test_drain_or_stop_of_an_unknown_worker_is_404(api_client: httpx.Client) -> None:
    for action in ("drain", "stop"):
        answer = api_client.post(f"/api/v1/workers/worker-nowhere-1/{action}")
        assert answer.status_code == 404, answer.text
        assert "worker 'worker-nowhere-1' not found" in answer.json()["error"]


def test_a_queue_nothing_serves_is_reported_and_its_enqueue_warned(
    api_client: httpx.Client, make_worker: Callable[..., WorkerProcess]
) -> None:
    job = enqueue(api_client, "gpu")
    assert job["status"] == "queued"
    assert "no live worker serves queue 'gpu'" in job["warning"]
    assert api_client.get("/api/v1/queue/status").json()["unserved_queues"] == ["gpu"]

    make_worker(queues="gpu")
    served = enqueue(api_client, "gpu")
    assert "warning" not in served
    assert api_client.get("/api/v1/queue/status").json()["unserved_queues"] == []
    for queued in (job, served):
        done = api_client.get(
            f"/api/v1/queue/jobs/{queued['job_id']}/wait", params={"timeout": "30s"}
        )
        assert done.json()["status"] == "succeeded"


def test_a_queue_a_declared_pool_serves_is_not_warned_about(
    make_server: Callable[..., ServerProcess], redis_server: RedisServer
) -> None:
    cluster = ClusterFile(pools={"default": PoolSpec(), "gpu": PoolSpec(name="gpu", min=0)})
    server = make_server(redis_url=redis_server.url, MIMIR_POOLS=pools_to_env(cluster)).start()
    with httpx.Client(base_url=server.base_url, timeout=30.0) as client:
        for queue in ("gpu", "default"):
            assert "warning" not in enqueue(client, queue)
        answer = enqueue(client, "other")
        assert "'other'" in answer["warning"]
        status = client.get("/api/v1/queue/status").json()
        assert status["unserved_queues"] == ["other"]
        assert json.loads(pools_to_env(cluster))["pools"]["gpu"]["queues"] == ["gpu"]
