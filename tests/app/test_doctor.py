"""``mimir doctor`` against real clusters broken on purpose: real redis-server, real
``mimir server`` and ``mimir worker`` processes, a real local cluster (``LocalBackend``).

Each test breaks one thing the way it breaks for an operator (a SIGSTOPped worker, a Redis
out of memory, a queue nobody serves, a worker clock shifted by libfaketime, a dead
process) and checks the doctor names it, with its figures; a healthy cluster reports
nothing and exits 0.
"""

from __future__ import annotations

import asyncio
import glob
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from mimir.app.cluster.base import ClusterBackend
from mimir.app.cluster.instances import Instance
from mimir.app.cluster.local import LocalBackend
from mimir.app.services.api import ApiClient
from mimir.app.services.doctor import (
    ClusterFacts,
    Finding,
    Report,
    Thresholds,
    analyse,
    analyse_cluster,
    diagnose,
)
from mimir.core.diagnostics import (
    DEAD_COUNT_MAX,
    QueueSnapshot,
    RedisState,
    WorkerState,
    collect,
)
from mimir.core.queue.keys import QueueKeys
from mimir.core.settings import Settings
from tests.app.conftest import stack_env
from tests.cluster.conftest import sleep_pipeline
from tests.helpers import RedisServer, ServerProcess, WorkerProcess, free_port, wait_until

pytestmark = pytest.mark.slow


def run_doctor(
    url: str, backend: ClusterBackend | None = None, thresholds: Thresholds | None = None
) -> Report:
    async def go() -> Report:
        api = ApiClient(url)
        try:
            return await diagnose(api, backend, thresholds=thresholds)
        finally:
            await api.aclose()

    return asyncio.run(go())


def only(report: Report, check: str) -> list[Finding]:
    return [f for f in report.findings if f.check == check]


def describe(report: Report) -> str:
    return "\n".join(f"{f.severity} {f.check} [{f.subject}] {f.seen}" for f in report.findings)


class Cluster:
    """A server and workers over one real redis-server, built per test."""

    def __init__(self, tmp_path: Path, redis_server: RedisServer) -> None:
        self.tmp_path = tmp_path
        self.redis_server = redis_server
        self.env = stack_env(tmp_path, redis_server.url)
        self.server = ServerProcess(free_port(), self.env).start(wait_for_redis=True)
        self.workers: list[WorkerProcess] = []
        self.http = httpx.Client(base_url=self.server.base_url, timeout=10.0)
        self.redis = redis.Redis.from_url(redis_server.url, socket_timeout=5)

    @property
    def url(self) -> str:
        return self.server.base_url

    def worker(self, queues: str = "default", concurrency: int = 2, **env: str) -> WorkerProcess:
        worker = WorkerProcess(
            {**self.env, **env},
            concurrency=concurrency,
            queues=queues,
            log_path=self.tmp_path / f"worker-{len(self.workers)}.log",
        )
        self.workers.append(worker)
        return worker.start()

    def enqueue(self, count: int = 1, seconds: float = 0.05, **body: Any) -> list[str]:
        ids = []
        for _ in range(count):
            answer = self.http.post(
                "/api/v1/queue/pipelines/enqueue",
                json={"pipeline": sleep_pipeline(seconds), "context": {}, **body},
            )
            assert answer.status_code == 202, answer.text
            ids.append(answer.json()["job_id"])
        return ids

    def status(self, job_id: str) -> str:
        return str(self.http.get(f"/api/v1/queue/jobs/{job_id}").json()["status"])

    def close(self) -> None:
        for worker in self.workers:
            if worker.alive():
                with_pid = worker.process
                assert with_pid is not None
                os.kill(with_pid.pid, signal.SIGCONT)  # a stopped process cannot die of TERM
            worker.kill()
        self.server.stop()
        self.http.close()
        self.redis.close()


@pytest.fixture
def cluster(tmp_path: Path, redis_server: RedisServer) -> Iterator[Cluster]:
    built = Cluster(tmp_path, redis_server)
    try:
        yield built
    finally:
        built.close()


# ---------------------------------------------------------------------- healthy, local


def _local_settings(root: Path) -> dict[str, str]:
    env = {}
    for name in ("data", "pipelines", "state"):
        (root / name).mkdir(parents=True, exist_ok=True)
        env[f"MIMIR_{name.upper()}_DIR"] = str(root / name)
    env["WORKER_CONCURRENCY"] = "2"
    return env


@pytest.fixture
def local_cluster(tmp_path: Path) -> Iterator[tuple[LocalBackend, dict[str, str]]]:
    env = _local_settings(tmp_path)
    backend = LocalBackend(
        "doctortest", Settings.from_env(env), api_port=free_port(), grace=5, start_timeout=60
    )
    asyncio.run(backend.up(2))
    try:
        yield backend, env
    finally:
        asyncio.run(backend.clean())


def _cli(env: dict[str, str], *args: str) -> tuple[int, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MIMIR_")}
    done = subprocess.run(
        [str(Path(sys.executable).parent / "mimir"), "doctor", *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    return done.returncode, done.stdout + done.stderr


def _rates(backend: LocalBackend, report: dict[str, Any]) -> str:
    """What Redis holds of the per-second counters, beside what the doctor read (CI once
    saw 2 of 10 jobs counted; this says where the others went if it happens again)."""
    state = backend.load_state()
    assert state is not None and state.redis_port is not None
    with redis.Redis(port=state.redis_port, decode_responses=True) as client:
        seconds, _ = client.time()
        rates = {
            key: (client.hgetall(key), client.ttl(key))
            for key in sorted(client.scan_iter("*rate:*"))
        }
        totals = client.hgetall("mimir:totals")
    return (
        f"redis time {seconds}; rate keys {rates}; totals {totals}; "
        f"doctor read {report['snapshot']['throughput']} at {report['snapshot']['redis_time']}"
    )


def test_a_healthy_local_cluster_reports_nothing_and_a_dead_process_is_an_error(
    local_cluster: tuple[LocalBackend, dict[str, str]],
) -> None:
    backend, env = local_cluster
    http = httpx.Client(base_url=backend.api_url, timeout=10.0)
    try:
        ids = [
            http.post(
                "/api/v1/queue/pipelines/enqueue",
                json={"pipeline": sleep_pipeline(0.01), "context": {}},
            ).json()["job_id"]
            for _ in range(10)
        ]
        wait_until(
            lambda: all(
                http.get(f"/api/v1/queue/jobs/{i}").json()["status"] == "succeeded" for i in ids
            ),
            timeout=30,
            message="ten jobs succeed",
        )
    finally:
        http.close()

    code, out = _cli(env, "--project", "doctortest", "--backend", "local", "--json")
    assert code == 0, out
    report = json.loads(out)
    assert report["findings"] == [], out
    assert report["exit_code"] == 0
    assert "workers.gone" in report["checks"] and "processes.gone" in report["checks"]
    assert report["snapshot"]["throughput"]["succeeded"] >= 10, _rates(backend, report)
    assert len(report["snapshot"]["workers"]) == 2
    # Every worker measured its own round trip and clock offset against Redis.
    for worker in report["snapshot"]["workers"]:
        assert worker["redis_rtt_ms"] is not None and worker["clock_offset_ms"] is not None
        assert abs(worker["clock_offset_ms"]) < 1000

    code, out = _cli(env, "--project", "doctortest", "--backend", "local")
    assert code == 0, out
    assert "nothing wrong" in out

    # A worker process killed behind the cluster's back: the local backend sees it gone.
    state = backend.load_state()
    assert state is not None
    victim = next(e for e in state.processes if e.service == "worker")
    os.kill(victim.pid, signal.SIGKILL)
    wait_until(lambda: not backend.is_alive(victim), timeout=10, message="worker gone")
    code, out = _cli(env, "--project", "doctortest", "--backend", "local")
    assert code == 2, out
    assert "processes.gone" in out and victim.name in out and str(victim.pid) in out


# ---------------------------------------------------------------------- broken on purpose


def test_a_sigstopped_worker_holding_jobs_is_found(cluster: Cluster) -> None:
    worker = cluster.worker(concurrency=2)
    ids = cluster.enqueue(2, seconds=60)
    wait_until(
        lambda: all(cluster.status(i) == "running" for i in ids),
        timeout=20,
        message="both jobs running",
    )
    assert worker.process is not None
    os.kill(worker.process.pid, signal.SIGSTOP)
    heartbeat = f"mimir:worker:{worker.worker_id}"
    wait_until(lambda: not cluster.redis.exists(heartbeat), timeout=10, message="heartbeat gone")

    report = run_doctor(cluster.url)
    gone = only(report, "workers.gone")
    assert len(gone) == 1, describe(report)
    assert gone[0].severity == "error" and gone[0].subject == worker.worker_id
    assert "2 jobs held by" in gone[0].seen
    assert "no live worker serves default" in gone[0].seen
    assert "SIGSTOP" in gone[0].action
    assert only(report, "workers.registered"), describe(report)  # nobody heartbeats now
    assert report.exit_code == 2


def test_redis_out_of_memory_is_found(cluster: Cluster) -> None:
    cluster.worker()
    used = int(cluster.redis.info("memory")["used_memory"])
    cluster.redis.config_set("maxmemory", used + 200_000)
    big = {"blob": "x" * 50_000}
    refused = None
    for _ in range(200):  # until Redis refuses: enqueue answers 503
        answer = cluster.http.post(
            "/api/v1/queue/pipelines/enqueue",
            json={"pipeline": sleep_pipeline(30), "context": big, "queue": "parked"},
        )
        if answer.status_code != 202:
            refused = answer
            break
    assert refused is not None and refused.status_code == 503, "Redis never filled up"

    report = run_doctor(cluster.url)
    memory = only(report, "redis.memory")
    assert memory and memory[0].severity == "error", describe(report)
    assert "maxmemory" in memory[0].seen and "noeviction" in memory[0].seen
    assert "enqueue answers 503" in memory[0].seen
    assert "recording outcomes" in memory[0].seen and "cannot record" not in memory[0].seen
    assert "MIMIR_REDIS_MAXMEMORY" in memory[0].action and "restart" in memory[0].action
    assert report.exit_code == 2


def test_a_queue_nobody_serves_and_the_dead_letter_are_found(cluster: Cluster) -> None:
    cluster.worker(queues="default")
    cluster.enqueue(3, queue="gpu")
    failing = {
        "name": "boom",
        "steps": [{"name": "boom", "plugin": "Debug.fail", "config": {"message": "disk on fire"}}],
    }
    answer = cluster.http.post(
        "/api/v1/queue/pipelines/enqueue",
        json={"pipeline": failing, "context": {}, "max_retries": 0},
    )
    job = answer.json()["job_id"]
    wait_until(lambda: cluster.status(job) == "failed", timeout=20, message="job failed")

    report = run_doctor(cluster.url)
    unserved = only(report, "queues.unserved")
    assert len(unserved) == 1, describe(report)
    assert unserved[0].subject == "gpu" and unserved[0].severity == "error"
    assert "3 jobs in 'gpu'" in unserved[0].seen and "serve: default" in unserved[0].seen
    assert "--queues gpu" in unserved[0].action
    dead = only(report, "dead_letter.growing")
    assert dead and "disk on fire" in dead[0].seen and "1 added" in dead[0].seen
    # The served queue is fine: nothing else is wrong.
    assert {f.check for f in report.findings} == {"queues.unserved", "dead_letter.growing"}


def _libfaketime() -> str:
    found = sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))
    assert found, "libfaketime is missing: apt-get install faketime (scripts/system-deps.sh)"
    return found[0]


def test_a_worker_whose_clock_is_shifted_is_found(cluster: Cluster) -> None:
    honest = cluster.worker()
    skewed = cluster.worker(
        LD_PRELOAD=_libfaketime(), FAKETIME="+7", FAKETIME_DONT_FAKE_MONOTONIC="1"
    )
    report = run_doctor(cluster.url)
    clock = only(report, "workers.clock")
    assert [f.subject for f in clock] == [skewed.worker_id], describe(report)
    assert clock[0].severity == "error"
    assert "7.0 s ahead of Redis's clock" in clock[0].seen or "6.9 s ahead" in clock[0].seen
    assert honest.worker_id not in describe(report)
    assert report.exit_code == 2


def test_a_backlog_is_found_with_the_scale_that_clears_it(cluster: Cluster) -> None:
    cluster.worker(concurrency=1)
    ids = cluster.enqueue(60, seconds=0.2)
    wait_until(
        lambda: sum(cluster.status(i) == "succeeded" for i in ids[:15]) == 15,
        timeout=60,
        message="15 jobs done",
    )
    # A target of 5 s instead of 10 min, so a small real backlog counts as large.
    report = run_doctor(cluster.url, thresholds=Thresholds(backlog_target_s=5))
    backlog = only(report, "queues.backlog")
    assert len(backlog) == 1, describe(report)
    assert backlog[0].subject == "default" and backlog[0].severity == "warning"
    assert "1 worker, 1 of 1 slots busy" in backlog[0].seen
    assert "backlog clears in" in backlog[0].action
    assert "`mimir cluster scale " in backlog[0].action
    target = int(backlog[0].action.split("`mimir cluster scale ")[1].split("`")[0])
    assert target >= 2


def test_an_api_that_does_not_answer_is_an_error() -> None:
    report = run_doctor(f"http://127.0.0.1:{free_port()}")
    assert [f.check for f in report.findings] == ["api.reachable"]
    assert report.exit_code == 2


def test_a_refused_token_is_an_error(
    tmp_path: Path, redis_server: RedisServer, make_token_server: Callable[[], ServerProcess]
) -> None:
    server = make_token_server()
    report = run_doctor(server.base_url)
    assert [f.check for f in report.findings] == ["api.token"], describe(report)
    # The route itself needs the token; with it the doctor gets past the token check, and
    # the answer does not carry the token.
    assert httpx.get(f"{server.base_url}/api/v1/diagnostics").status_code == 401

    async def with_token() -> tuple[Report, str]:
        api = ApiClient(server.base_url, "s3cret")
        try:
            body = json.dumps(await api.request("GET", "/api/v1/diagnostics"))
            return await diagnose(api), body
        finally:
            await api.aclose()

    report, body = asyncio.run(with_token())
    assert not only(report, "api.token") and not only(report, "api.reachable"), describe(report)
    assert report.snapshot is not None
    assert "s3cret" not in body


def test_the_cli_exits_3_when_it_cannot_run_and_reports_an_engine_that_does_not_answer(
    tmp_path: Path,
) -> None:
    env = _local_settings(tmp_path)
    code, out = _cli(env, "--no-such-option")
    assert code == 3, out  # not 2, which means "errors found"
    # A Docker engine that does not answer: cluster.control, and the API is still checked.
    code, out = _cli(
        {**env, "MIMIR_API_URL": f"http://127.0.0.1:{free_port()}"},
        "--backend", "docker", "--project", "doctorgone",
        "--docker-host", f"tcp://127.0.0.1:{free_port()}", "--json",
    )  # fmt: skip
    assert code == 2, out
    checks = {f["check"] for f in json.loads(out)["findings"]}
    assert checks == {"cluster.control", "api.reachable"}, out


def test_an_engine_named_by_profile_or_docker_host_is_the_docker_backend(tmp_path: Path) -> None:
    """Without --backend, --docker-host or --profile choose the engine they name: its
    failure is reported, never a diagnosis of local processes (issue 19, defect 1)."""
    env = {**_local_settings(tmp_path), "MIMIR_API_URL": f"http://127.0.0.1:{free_port()}"}
    dead = f"tcp://127.0.0.1:{free_port()}"
    profile = tmp_path / "remote.json"
    profile.write_text(json.dumps({"docker_host": dead}))
    # A local cluster once recorded under the same name must not win over the named engine.
    (tmp_path / "state" / "doctorremote").mkdir(parents=True)
    (tmp_path / "state" / "doctorremote" / "state.json").write_text("{}")
    for option in (["--docker-host", dead], ["--profile", str(profile)]):
        code, out = _cli(env, "--project", "doctorremote", *option, "--json")
        assert code == 2, out
        findings = json.loads(out)["findings"]
        control = [f for f in findings if f["check"] == "cluster.control"]
        assert control and "127.0.0.1" in json.dumps(control), out


# ---------------------------------------------------------------------- the rules alone


def _snapshot(**fields: Any) -> QueueSnapshot:
    return QueueSnapshot(
        redis_time=1_800_000_000.0,
        rtt_ms=1.0,
        redis=RedisState(aof_enabled=True, aof_last_write_status="ok"),
        **fields,
    )


def _worker(worker_id: str, **fields: Any) -> WorkerState:
    return WorkerState(worker_id=worker_id, hostname="h", queues=["default"], **fields)


def test_a_clock_offset_within_its_measuring_error_is_not_a_skew() -> None:
    snap = _snapshot(
        workers=[
            _worker("skewed", clock_offset_ms=1500.0, redis_rtt_ms=2.0),
            # Read 1.5 s late because its loop was busy for 3 s: not a skew, a slow worker.
            _worker("busy", clock_offset_ms=1500.0, redis_rtt_ms=3000.0),
            _worker("behind", clock_offset_ms=-4000.0, redis_rtt_ms=3000.0),
        ]
    )
    findings = analyse(snap)
    clock = {f.subject: f for f in findings if f.check == "workers.clock"}
    assert sorted(clock) == ["behind", "skewed"], findings
    assert "4.0 s behind Redis's clock (± 1.5 s" in clock["behind"].seen
    assert {f.subject for f in findings if f.check == "workers.latency"} == {"busy", "behind"}


def test_an_old_container_restart_is_a_note_and_a_recent_one_a_warning() -> None:
    now = 1_800_000_000.0

    def worker(name: str, state: str, started: float | None) -> Instance:
        return Instance(name=name, service="worker", kind="worker", state=state, ident=name,
                        restarts=1, exit_code=137, started_at=started)  # fmt: skip

    facts = ClusterFacts(
        backend="docker",
        project="mimir",
        now=now,
        instances=[
            worker("old", "running", now - 7 * 86400),
            worker("recent", "running", now - 120),
            worker("looping", "restarting", now - 5),
            worker("unknown", "running", None),
        ],
    )
    severity = {f.subject: f.severity for f in analyse_cluster(facts)}
    assert severity == {
        "old": "info", "recent": "warning", "looping": "error", "unknown": "warning",
    }  # fmt: skip
    report = Report(target="x", findings=[f for f in analyse_cluster(facts) if f.subject == "old"])
    assert report.exit_code == 0  # a note alone leaves the exit status at 0


def _collect(url: str, keys: QueueKeys) -> QueueSnapshot:
    """What the server's diagnostics read from the Redis at ``url``."""

    async def read() -> QueueSnapshot:
        from redis.asyncio import Redis

        async_client = Redis.from_url(url)
        try:
            return await collect(async_client, keys)
        finally:
            await async_client.aclose()

    return asyncio.run(read())


def test_the_dead_letter_is_read_bounded(redis_server: RedisServer) -> None:
    """A mass failure leaves many entries: the server reads at most DEAD_COUNT_MAX."""
    client = redis.Redis.from_url(redis_server.url)
    keys = QueueKeys()
    with client.pipeline(transaction=False) as pipe:
        for i in range(DEAD_COUNT_MAX + 500):
            pipe.xadd(keys.dead, {"job_id": f"j{i}", "status": "failed", "error": f"boom {i}"})
        pipe.execute()
    client.close()

    snap = _collect(redis_server.url, keys)
    assert snap.dead.total == DEAD_COUNT_MAX + 500
    assert snap.dead.recent == DEAD_COUNT_MAX and snap.dead.recent_capped
    assert snap.dead.newest_error == f"boom {DEAD_COUNT_MAX + 499}"
    [dead] = [f for f in analyse(snap) if f.check == "dead_letter.growing"]
    assert f"{DEAD_COUNT_MAX} or more added" in dead.seen


def test_throughput_counts_jobs_that_ended_this_second(redis_server: RedisServer) -> None:
    # CI ran the doctor under a second after ten jobs ended: it counted the 2 that ended
    # in the second before and none of the 8 in the second still going.
    client = redis.Redis.from_url(redis_server.url)
    keys = QueueKeys()
    now, _ = client.time()
    client.hset(keys.rate(now - 1), "succeeded", 2)
    client.hset(keys.rate(now), mapping={"succeeded": 8, "failed": 1})
    client.hset(keys.rate(now - 60), "succeeded", 100)  # older than the window
    client.close()

    snap = _collect(redis_server.url, keys)
    # (A read that lands in the next second still has both of them in its window.)
    assert (snap.throughput.succeeded, snap.throughput.failed) == (10, 1)


@pytest.fixture
def make_token_server(
    tmp_path: Path, redis_server: RedisServer
) -> Iterator[Callable[[], ServerProcess]]:
    servers: list[ServerProcess] = []

    def make() -> ServerProcess:
        env = stack_env(tmp_path, redis_server.url, MIMIR_API_TOKEN="s3cret")
        server = ServerProcess(free_port(), env).start(wait_for_redis=True)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()
