"""The queue on a real Redis Cluster: three primaries (``redis-server --cluster-enabled
yes`` x3 + ``redis-cli --cluster create``), password-protected, on loopback ports.

A real API server (password in its ``redis+cluster://`` URL) and a real worker (password
from ``MIMIR_REDIS_PASSWORD_FILE``) run a few hundred jobs enqueued over HTTP — three
priorities, a delayed one, one failing (retried, then failed into the dead letter), one
cancelled while running (the ``cancel`` channel: classic pub/sub across the cluster bus)
— and 100 more through ``mimir enqueue``. Every outcome is counted exactly, a job event
reaches an SSE client, ``/metrics`` and ``/api/v1/pools`` answer; then every node is
scanned: every key the server and the worker made hashes to the slot of ``{mimir}``
(the default prefix, hash-tagged by the settings), held by one node, the other two empty.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from redis.cluster import ClusterNode, RedisCluster

from mimir.core.queue.keys import QueueKeys
from tests.helpers import ServerProcess, WorkerProcess, free_port, port_open, wait_until
from tests.server.conftest import server_env

pytestmark = [pytest.mark.slow, pytest.mark.ha]

PASSWORD = "cluster-s3cret-9b1e"
PREFIX = "{mimir}:"  # what Settings makes of the default prefix for a cluster URL
HTTP_JOBS = 300  # 296 plain (three priorities), delayed, failing, cancelled running/queued
CLI_JOBS = 100


def _cluster_ports(count: int) -> list[int]:
    """``count`` ports P with P and its cluster bus port P + 10000 both free."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port + 10000 < 65536 and port not in ports and not port_open(port + 10000):
            ports.append(port)
    return ports


class ClusterNodes:
    """Three redis-server processes in cluster mode, each in its own directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.ports = _cluster_ports(3)
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not on PATH (scripts/system-deps.sh)"
        for port in self.ports:
            directory = self.root / f"node-{port}"
            directory.mkdir(parents=True)
            # The password in a config file (mode 0600), not in the process's argv.
            conf = directory / "redis.conf"
            conf.write_text(f"requirepass {PASSWORD}\nmasterauth {PASSWORD}\n")
            conf.chmod(0o600)
            argv = [
                binary, str(conf), "--port", str(port), "--bind", "127.0.0.1",
                "--dir", str(directory), "--cluster-enabled", "yes",
                "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000",
                "--save", "", "--appendonly", "no", "--protected-mode", "yes",
                "--logfile", str(directory / "redis.log"),
            ]  # fmt: skip
            self.processes.append(
                subprocess.Popen(
                    argv,
                    cwd=directory,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        for port in self.ports:
            wait_until(lambda port=port: port_open(port), timeout=10, message=f"node {port}")
        cli = shutil.which("redis-cli")
        assert cli, "redis-cli is not on PATH"
        argv = [cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports),
                "--cluster-replicas", "0", "--cluster-yes"]  # fmt: skip
        created = subprocess.run(
            argv,
            env={**os.environ, "REDISCLI_AUTH": PASSWORD},  # not in argv
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert created.returncode == 0, created.stdout + created.stderr

        def ok(port: int) -> bool:
            with self.node(port) as client:
                return "cluster_state:ok" in str(client.execute_command("CLUSTER", "INFO"))

        for port in self.ports:
            wait_until(lambda port=port: ok(port), timeout=15, message=f"cluster ok on {port}")

    def node(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, password=PASSWORD, socket_timeout=5, decode_responses=True)

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=10)

    @property
    def hosts(self) -> str:
        return ",".join(f"127.0.0.1:{port}" for port in self.ports)


class ClusterWorker(WorkerProcess):
    """A worker whose start waits for its heartbeat key on the cluster."""

    def __init__(self, client: RedisCluster, env: dict[str, str], **kwargs: Any) -> None:
        super().__init__(env, **kwargs)
        self.client = client

    def start(self, timeout: float = 20.0) -> ClusterWorker:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        self._pid = self.process.pid
        key = QueueKeys(PREFIX).worker(self.worker_id)

        def registered() -> bool:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"worker exited:\n{self.output()}")
            return bool(self.client.exists(key))

        wait_until(registered, timeout=timeout, message=f"worker heartbeat\n{self.output()}")
        return self


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[ClusterNodes]:
    nodes = ClusterNodes(tmp_path / "cluster")
    try:
        nodes.start()
        yield nodes
    finally:
        nodes.stop()


def _pipeline(name: str, plugin: str, config: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "steps": [{"name": "s", "plugin": plugin, "config": config}]}


def test_queue_on_a_three_primary_cluster(
    cluster: ClusterNodes, tmp_path: Path, data_dir: Path
) -> None:
    timings: dict[str, float] = {}
    started = time.monotonic()
    password_file = tmp_path / "secrets" / "mimir_redis_password"
    password_file.parent.mkdir()
    password_file.write_text(PASSWORD + "\n")
    password_file.chmod(0o600)
    client = RedisCluster(
        startup_nodes=[ClusterNode("127.0.0.1", port) for port in cluster.ports],
        password=PASSWORD,
        decode_responses=True,
        socket_timeout=5,
    )
    keys = QueueKeys(PREFIX)
    server = ServerProcess(
        free_port(),
        server_env(
            data_dir=data_dir,
            pipelines_dir=tmp_path / "pipelines",
            state_dir=tmp_path / "state",
            redis_url=f"redis+cluster://:{PASSWORD}@{cluster.hosts}",
            MIMIR_LOG_FORMAT="text",
        ),
        log_path=tmp_path / "server.log",
    )
    worker_env = {
        k: v for k, v in os.environ.items() if not k.startswith("MIMIR_") and k != "REDIS_URL"
    }
    worker_env.update(
        REDIS_URL=f"redis+cluster://{cluster.hosts}/0",
        MIMIR_REDIS_PASSWORD_FILE=str(password_file),
        MIMIR_DATA_DIR=str(data_dir),
        MIMIR_LOG_FORMAT="text",
    )
    worker = ClusterWorker(client, worker_env, concurrency=16, log_path=tmp_path / "worker.log")
    events: list[str] = []
    stop_events = threading.Event()
    try:
        server.launch()  # the server and the worker start side by side
        worker.start()

        def healthy() -> bool:
            if server.process is not None and server.process.poll() is not None:
                raise RuntimeError(f"the server exited:\n{server.output()}")
            try:
                return httpx.get(f"{server.base_url}/health", timeout=1).json()["redis"] == "ok"
            except (httpx.HTTPError, ValueError, KeyError):
                return False

        wait_until(healthy, timeout=30, interval=0.05, message=f"the server\n{server.output()}")
        timings["cluster, server and worker up"] = time.monotonic() - started
        http = httpx.Client(base_url=server.base_url, timeout=15)
        sse = threading.Thread(
            target=_read_events, args=(server.base_url, events, stop_events), daemon=True
        )
        sse.start()
        enqueue_url = "/api/v1/queue/pipelines/enqueue"
        plain = _pipeline("plain", "Debug.echo", {"value": 1})

        def enqueue(body: dict[str, Any]) -> str:
            answer = http.post(enqueue_url, json=body)
            assert answer.status_code == 202, answer.text
            return str(answer.json()["job_id"])

        t0 = time.monotonic()
        long_id = enqueue(
            {"pipeline": _pipeline("long", "Debug.sleep", {"seconds": 60}), "timeout": 120}
        )
        failing_id = enqueue(
            {
                "pipeline": _pipeline("failing", "Debug.fail", {"message": "planned"}),
                "max_retries": 1,
                "retry_backoff": 0.2,
            }
        )
        delayed_id = enqueue({"pipeline": plain, "delay": 1.5})
        # Queued where no worker serves it, with an idempotency key, then cancelled: its
        # stream entry deleted by a script that declares the stream.
        parked_id = enqueue({"pipeline": plain, "queue": "parked", "idempotency_key": "{k}1"})
        assert enqueue({"pipeline": plain, "queue": "parked", "idempotency_key": "{k}1"}) == (
            parked_id
        )
        answer = http.post(f"/api/v1/queue/jobs/{parked_id}/cancel")
        assert answer.status_code == 200 and answer.json()["status"] == "cancelled", answer.text
        assert client.xlen(keys.stream("parked", "normal")) == 0
        priorities = ("high", "normal", "low")
        plain_ids = [
            enqueue({"pipeline": plain, "priority": priorities[i % 3]})
            for i in range(HTTP_JOBS - 4)
        ]
        timings[f"{HTTP_JOBS} enqueues over HTTP"] = time.monotonic() - t0
        # Cancel the long job once it runs: the worker hears it on the cancel channel.
        wait_until(
            lambda: client.hget(keys.job(long_id), "status") == "running",
            timeout=15,
            message="the long job running",
        )
        answer = http.post(f"/api/v1/queue/jobs/{long_id}/cancel")
        assert answer.status_code == 200, answer.text
        t0 = time.monotonic()
        nap = tmp_path / "nap.yaml"
        nap.write_text(
            "name: nap\nsteps:\n  - name: e\n    plugin: Debug.echo\n    config: {value: 2}\n"
        )
        done = subprocess.run(
            [sys.executable, "-m", "mimir.core.cli", "enqueue", str(nap), "--count", str(CLI_JOBS)],
            env=worker_env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        cli_ids = done.stdout.split()
        assert len(set(cli_ids)) == CLI_JOBS
        timings[f"{CLI_JOBS} through mimir enqueue"] = time.monotonic() - t0
        total = HTTP_JOBS + CLI_JOBS
        t0 = time.monotonic()

        def ended() -> int:  # the queue's tally, written with each job's final status
            return sum(int(n) for n in client.hgetall(keys.totals).values())

        def stored() -> int:  # the server's run ingest, which then releases the records
            return int(http.get("/api/v1/runs/status").json()["runs"])

        try:
            wait_until(lambda: ended() >= total, timeout=40, interval=0.1)
            timings[f"all {total} ended (after the last enqueue)"] = time.monotonic() - t0
            wait_until(lambda: stored() >= total, timeout=20, interval=0.1)
            timings[f"all {total} runs stored"] = time.monotonic() - t0
        except AssertionError:
            streams = {
                s: (client.xlen(s), client.xinfo_groups(s))
                for s in client.scan_iter(match=f"{PREFIX}stream:*")
            }
            raise AssertionError(
                f"{ended()} of {total} ended, {stored()} stored; {streams}\n"
                f"{worker.output()}\n{server.output()}"
            ) from None

        # Counted exactly: each job ended once (the tally: one count per final status
        # written; the run store: one run per job), each with the status planned.
        totals = client.hgetall(keys.totals)
        assert totals == {"succeeded": str(total - 3), "failed": "1", "cancelled": "2"}
        runs: dict[str, dict[str, Any]] = {}
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"limit": 1000, **({"cursor": cursor} if cursor else {})}
            page = http.get("/api/v1/runs", params=params).json()
            for run in page["runs"]:
                assert run["job_id"] not in runs, run["job_id"]
                runs[run["job_id"]] = run
            cursor = page.get("next_cursor")
            if not cursor:
                break
        expected = {job_id: "succeeded" for job_id in [*plain_ids, delayed_id, *cli_ids]}
        expected.update({failing_id: "failed", long_id: "cancelled", parked_id: "cancelled"})
        assert {job_id: run["status"] for job_id, run in runs.items()} == expected
        assert runs[failing_id]["attempts"] == 2
        dead = http.get("/api/v1/queue/dead-letter").json()
        assert [entry["job_id"] for entry in dead["entries"]] == [failing_id]
        delayed = runs[delayed_id]
        assert _epoch(delayed["started_at"]) - _epoch(delayed["enqueued_at"]) >= 1.4
        assert Counter(runs[i]["priority"] for i in plain_ids) == Counter(
            priorities[i % 3] for i in range(HTTP_JOBS - 4)
        )
        # The failed job retried from the dead letter (its stream declared): it fails again.
        answer = http.post(f"/api/v1/queue/dead-letter/{failing_id}/retry")
        assert answer.status_code == 200, answer.text
        wait_until(lambda: client.hget(keys.totals, "failed") == "2", timeout=15)
        # Live views: an SSE job event; figures read with TIME through a cluster pipeline.
        wait_until(
            lambda: any('"job_id"' in e for e in events),
            timeout=10,
            message=f"an SSE job event: {events[:5]}\n{server.output(80)}",
        )
        metrics = http.get("/metrics")
        assert metrics.status_code == 200 and "mimir_" in metrics.text, metrics.text[:300]
        pools = http.get("/api/v1/pools")
        assert pools.status_code == 200, pools.text
        for path in ("/api/v1/queue/status", "/api/v1/diagnostics", "/api/v1/autoscaler"):
            answer = http.get(path)
            assert answer.status_code == 200, (path, answer.text)
        http.close()

        # Every key in the slot of {mimir}, on the one node that owns it.
        t0 = time.monotonic()
        by_node: dict[int, int] = {}
        with cluster.node(cluster.ports[0]) as any_node:
            slot = int(any_node.execute_command("CLUSTER", "KEYSLOT", "{mimir}"))
        strays: list[str] = []
        for port in cluster.ports:
            with cluster.node(port) as node:
                found = list(node.scan_iter(count=1000))
                by_node[port] = len(found)
                for key in found:
                    if int(node.execute_command("CLUSTER", "KEYSLOT", key)) != slot:
                        strays.append(key)
                    if not key.startswith(PREFIX):
                        strays.append(key)
        timings["slot check"] = time.monotonic() - t0
        assert not strays, strays[:20]
        holders = [port for port, n in by_node.items() if n]
        # One done list per job stays (with its status) after the run store took the run.
        assert len(holders) == 1 and by_node[holders[0]] > total, by_node
        owner = client.get_node_from_key("{mimir}")
        assert owner is not None and owner.port == holders[0]
        assert worker.alive(), worker.output()
    finally:
        stop_events.set()
        worker.kill()
        server.stop()
        client.close()
    timings["total"] = time.monotonic() - started
    print("; ".join(f"{name}: {seconds:.2f}s" for name, seconds in timings.items()))
    print(f"keys per node: {by_node}")
    for log in (server.log_path, worker.log_path):
        text = log.read_text(errors="replace")
        assert PASSWORD not in text
        assert "Traceback" not in text and " ERROR " not in text, text[-3000:]


def _epoch(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def _read_events(base_url: str, events: list[str], stop: threading.Event) -> None:
    """Collect the ``data:`` lines of the server's event stream until ``stop``."""
    try:
        with httpx.stream("GET", f"{base_url}/api/v1/events", timeout=30) as answer:
            for line in answer.iter_lines():
                if line.startswith("data:"):
                    events.append(line)
                if stop.is_set():
                    return
    except httpx.HTTPError:
        return
