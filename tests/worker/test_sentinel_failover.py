"""Redis that survives its host: a real Sentinel failover under load.

One primary, one replica and three Sentinels (quorum 2) on loopback ports, two real
worker processes and ``mimir enqueue`` all connected through ``redis+sentinel://`` with
``MIMIR_REDIS_MIN_REPLICAS=1``. 1,000 jobs are enqueued, the primary is killed with
SIGKILL mid-run, the Sentinels promote the replica, the killed host is rebuilt as a
replica of the new primary (so writes find a replica to ``WAIT`` for again) and every job
ends: 1,000 succeeded, none lost, none completed twice (the queue's outcome script accepts
one completion per job: one ``outcomes`` entry each).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from mimir.core.queue.keys import QueueKeys
from tests.helpers import WorkerProcess, free_port, port_open, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.ha]

SERVICE = "mimir-test"
JOBS = 1_000


class Node:
    """One redis-server (or sentinel) child process."""

    def __init__(self, name: str, directory: Path, args: list[str]) -> None:
        self.name = name
        self.directory = directory
        self.args = args
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, port: int) -> Node:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not on PATH (scripts/system-deps.sh)"
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [binary, *self.args],
            cwd=self.directory,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(lambda: port_open(port), timeout=10, message=f"{self.name} on {port}")
        return self

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)


def _data_node(directory: Path, port: int, replica_of: int | None = None) -> list[str]:
    args = [
        "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory),
        "--save", "", "--appendonly", "yes", "--appendfsync", "everysec",
        "--logfile", str(directory / "redis.log"),
        # A replica that (re)attaches is sent the snapshot at once, not after the
        # default 5 s of waiting for other replicas to share the transfer.
        "--repl-diskless-sync-delay", "0",
    ]  # fmt: skip
    if replica_of is not None:
        args += ["--replicaof", "127.0.0.1", str(replica_of)]
    return args


def _sentinel(directory: Path, port: int, primary: int) -> list[str]:
    directory.mkdir(parents=True, exist_ok=True)
    conf = directory / "sentinel.conf"  # rewritten by the Sentinel as it learns
    conf.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {directory}\nlogfile {directory / 'sentinel.log'}\n"
        f"sentinel monitor {SERVICE} 127.0.0.1 {primary} 2\n"
        f"sentinel down-after-milliseconds {SERVICE} 1000\n"
        f"sentinel failover-timeout {SERVICE} 5000\n"
        f"sentinel parallel-syncs {SERVICE} 1\n"
    )
    return [str(conf), "--sentinel"]


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[list[Node]]:
    started: list[Node] = []
    yield started
    for node in started:
        node.kill()


def _role(port: int) -> str:
    try:
        with redis.Redis(port=port, socket_timeout=1, decode_responses=True) as client:
            return str(client.info("replication")["role"])
    except redis.RedisError:
        return "down"


def test_failover_loses_no_acknowledged_job(
    nodes: list[Node], tmp_path: Path, data_dir: Path
) -> None:
    primary_port, replica_port = free_port(), free_port()
    sentinel_ports = [free_port() for _ in range(3)]
    primary = Node("primary", tmp_path / "primary", _data_node(tmp_path / "primary", primary_port))
    nodes.append(primary.start(primary_port))
    replica_dir = tmp_path / "replica"
    replica = Node("replica", replica_dir, _data_node(replica_dir, replica_port, primary_port))
    nodes.append(replica.start(replica_port))
    for i, port in enumerate(sentinel_ports):
        directory = tmp_path / f"sentinel-{i}"
        nodes.append(Node(f"sentinel {i}", directory, _sentinel(directory, port, primary_port)))
        nodes[-1].start(port)

    def ready() -> bool:  # every Sentinel knows the replica and the two others
        for port in sentinel_ports:
            with redis.Redis(port=port, socket_timeout=1, decode_responses=True) as client:
                fields = client.sentinel_master(SERVICE)
                if int(fields["num-slaves"]) < 1 or int(fields["num-other-sentinels"]) < 2:
                    return False
        return True

    wait_until(ready, timeout=20, interval=0.1, message="the Sentinels to see one another")
    hosts = ",".join(f"127.0.0.1:{port}" for port in sentinel_ports)
    url = f"redis+sentinel://{hosts}/{SERVICE}/0"
    env = {
        "REDIS_URL": url,
        "MIMIR_REDIS_MIN_REPLICAS": "1",
        "MIMIR_DATA_DIR": str(data_dir),
        "MIMIR_WORKER_LEASE": "5",
        "MIMIR_WORKER_MAX_OUTAGE": "60",
        "MIMIR_LOG_FORMAT": "text",
    }
    workers = [
        WorkerProcess(env, concurrency=8, log_path=tmp_path / f"worker-{i}.log") for i in range(2)
    ]
    try:
        for worker in workers:
            worker.start()
        _run(url, primary, primary_port, replica_port, workers)
    finally:
        for worker in workers:
            worker.kill()


def _run(
    url: str, primary: Node, primary_port: int, replica_port: int, workers: list[WorkerProcess]
) -> None:
    keys = QueueKeys("mimir:")

    # `mimir enqueue` as a user runs it, through the Sentinels, each batch WAITing.
    pipeline = primary.directory.parent / "nap.yaml"
    pipeline.write_text(
        "name: nap\nsteps:\n  - name: nap\n    plugin: Debug.sleep\n"
        "    config: {seconds: 0.04}\n    output: nap\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIMIR_")}
    env.update(REDIS_URL=url, MIMIR_REDIS_MIN_REPLICAS="1")
    done = subprocess.run(
        [sys.executable, "-m", "mimir.core.cli", "enqueue", str(pipeline), "--count", str(JOBS)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    print(done.stderr.strip().splitlines()[-1])
    job_ids = done.stdout.split()
    assert len(set(job_ids)) == JOBS
    replica_client: Any = redis.Redis(port=replica_port, socket_timeout=2, decode_responses=True)

    def finished() -> int:
        return int(replica_client.xlen(keys.outcomes))

    # Mid-run: a good part done, a good part left.
    wait_until(lambda: finished() >= 250, timeout=30, interval=0.01, message="250 jobs ended")
    kill_ms = int(time.time() * 1000)
    primary.kill()
    done_at_kill = finished()
    wait_until(
        lambda: _role(replica_port) == "master", timeout=20, interval=0.05, message="promotion"
    )
    promoted_s = time.time() - kill_ms / 1000
    # Until a replica is back, WAIT 1 is not met: outcomes are written on the new primary
    # but not acknowledged, and the workers write them again. The killed host is rebuilt
    # as a replica of the new primary (its stale data replaced by a full resync); the
    # Sentinels would convert it too, but only at their next 10-second check.
    primary.args = _data_node(primary.directory, primary_port, replica_of=replica_port)
    primary.start(primary_port)
    rebuilt = redis.Redis(port=primary_port, socket_timeout=2, decode_responses=True)

    def replicated_after_kill() -> bool:
        try:
            return bool(rebuilt.xrange(keys.outcomes, min=f"{kill_ms + 1}-0", count=1))
        except redis.RedisError:  # loading, or syncing
            return False

    wait_until(replicated_after_kill, timeout=30, interval=0.02, message="a job acknowledged")
    acknowledged_s = time.time() - kill_ms / 1000
    rebuilt.close()
    first_id = replica_client.xrange(keys.outcomes, min=f"{kill_ms + 1}-0", count=1)[0][0]
    first_ms = int(first_id.split("-")[0])
    wait_until(lambda: finished() >= JOBS, timeout=40, interval=0.1, message=f"{JOBS} ended")

    completions: dict[str, int] = {}
    statuses: dict[str, int] = {}
    for _, fields in replica_client.xrange(keys.outcomes):
        completions[fields["job"]] = completions.get(fields["job"], 0) + 1
    for job_id in job_ids:
        status = str(replica_client.hget(keys.job(job_id), "status"))
        statuses[status] = statuses.get(status, 0) + 1
    reruns = sum(
        1 for job_id in job_ids if int(replica_client.hget(keys.job(job_id), "attempts") or 0) > 1
    )
    logs = "".join(worker.log_path.read_text(errors="replace") for worker in workers)
    # A completion written on the primary but not acknowledged by a replica is written
    # again; the outcome script refuses the second write (one completion per job).
    refused = logs.count("not written again") + logs.count("outcome discarded")
    twice = [job_id for job_id, n in completions.items() if n > 1]
    lost = [job_id for job_id in job_ids if job_id not in completions]
    print(
        f"kill -9 of the primary with {done_at_kill} of {JOBS} jobs ended; replica promoted "
        f"after {promoted_s:.2f}s; first job finished on the new primary "
        f"{(first_ms - kill_ms) / 1000:.2f}s after the kill, first acknowledged by a replica "
        f"(the old host rebuilt as one) {acknowledged_s:.2f}s after; "
        f"{statuses.get('succeeded', 0)} succeeded, {len(lost)} lost, {len(twice)} completed "
        f"twice; {reruns} delivered more than once, {refused} second completions refused"
    )
    replica_client.close()
    assert statuses == {"succeeded": JOBS}, statuses
    assert not lost and not twice
    assert len(completions) == JOBS
    assert all(worker.alive() for worker in workers), [w.output() for w in workers]


def test_server_through_sentinel_with_a_password(
    nodes: list[Node], tmp_path: Path, data_dir: Path
) -> None:
    """The API server on a password-protected Redis found through a Sentinel, with
    MIN_REPLICAS=1: /health reaches Redis, an enqueue over HTTP is answered once the
    replica has the job, a backup's snapshot is fetched from the primary, and the password
    never reaches the server's log."""
    from tests.helpers import ServerProcess
    from tests.server.conftest import server_env

    secret = "s3cret-sentinel-pw"
    primary_port, replica_port, sentinel_port = free_port(), free_port(), free_port()
    auth = ["--requirepass", secret, "--masterauth", secret]
    primary_dir, replica_dir = tmp_path / "primary", tmp_path / "replica"
    nodes.append(
        Node("primary", primary_dir, _data_node(primary_dir, primary_port) + auth).start(
            primary_port
        )
    )
    nodes.append(
        Node("replica", replica_dir, _data_node(replica_dir, replica_port, primary_port) + auth)
    )
    nodes[-1].start(replica_port)
    sentinel_dir = tmp_path / "sentinel"
    args = _sentinel(sentinel_dir, sentinel_port, primary_port)
    conf = sentinel_dir / "sentinel.conf"
    conf.write_text(
        conf.read_text().replace(f"{primary_port} 2\n", f"{primary_port} 1\n")
        + f"sentinel auth-pass {SERVICE} {secret}\n"
    )
    nodes.append(Node("sentinel", sentinel_dir, args).start(sentinel_port))
    url = f"redis+sentinel://:{secret}@127.0.0.1:{sentinel_port}/{SERVICE}/0"
    server = ServerProcess(
        free_port(),
        server_env(
            data_dir=data_dir,
            pipelines_dir=tmp_path / "pipelines",
            state_dir=tmp_path / "state",
            redis_url=url,
            MIMIR_REDIS_MIN_REPLICAS="1",
        ),
        log_path=tmp_path / "server.log",
    )
    try:
        server.start(wait_for_redis=True)
        import httpx

        pipeline = {
            "name": "hello",
            "steps": [{"name": "e", "plugin": "Debug.echo", "config": {"value": 1}}],
        }
        answer = httpx.post(
            f"{server.base_url}/api/v1/queue/pipelines/enqueue",
            json={"pipeline": pipeline},
            timeout=10,
        )
        assert answer.status_code == 202, answer.text
        job_id = answer.json()["job_id"]
        with redis.Redis(port=replica_port, password=secret, decode_responses=True) as replica:
            assert replica.hget(f"mimir:job:{job_id}", "status") == "queued"
        # A backup's snapshot comes from the primary the Sentinel names.
        from mimir.core.backup.redis_rdb import fetch_rdb

        snapshot = fetch_rdb(url, tmp_path / "dump.rdb", timeout=30)
        assert snapshot.size > 0
    finally:
        server.stop()
    log = server.log_path.read_text(errors="replace")
    assert secret not in log
    assert f"redis+sentinel://:***@127.0.0.1:{sentinel_port}/{SERVICE}/0" in log
