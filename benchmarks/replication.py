"""The cost of ``MIMIR_REDIS_MIN_REPLICAS``: enqueue rate without and with ``WAIT 1``.

``python -m benchmarks.replication [--jobs 2000] [--rounds 5]``

A primary and one replica (redis-server, no persistence, loopback) started here; the
producer connects with ``min_replicas=0`` and ``min_replicas=1`` in turn (alternating,
``--rounds`` times each) and enqueues ``--jobs`` small pipeline jobs one call at a time
(each call waits for the replica: one ``WAIT`` per job) and in batches of 100 (one
``WAIT`` per batch). Prints the medians side by side, jobs per second. On one machine the
replica is a loopback hop away: across hosts, add the network round trip to every
acknowledged write.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from benchmarks._processes import free_port, wait_for

BATCH = 100


def _start(directory: Path, port: int, replica_of: int | None = None) -> subprocess.Popen[bytes]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not on PATH")
    directory.mkdir(parents=True, exist_ok=True)
    args = [
        binary,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--dir",
        str(directory),
    ]
    args += ["--repl-diskless-sync-delay", "0"]  # the replica synced at once
    if replica_of is not None:
        args += ["--replicaof", "127.0.0.1", str(replica_of)]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def _rate(url: str, replicas: int, jobs: int, batch: int) -> float:
    from mimir.core.queue import JobQueue, JobSpec, connect

    payload = {"pipeline": {"name": "noop", "steps": []}, "context": {}}
    client = connect(url, min_replicas=replicas)
    try:
        queue = JobQueue(client, prefix=f"bench{replicas}:", job_ttl=600)
        specs = [JobSpec(payload=payload, pipeline="noop") for _ in range(jobs)]
        await queue.enqueue(specs[0])  # connection and script loaded before the clock
        started = time.perf_counter()
        if batch == 1:
            for spec in specs:
                await queue.enqueue(spec)
        else:
            for first in range(0, jobs, batch):
                await queue.enqueue_many(specs[first : first + batch])
        elapsed = time.perf_counter() - started
        await client.flushdb()
        return jobs / elapsed
    finally:
        await client.aclose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.replication", description=__doc__)
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    import redis

    with tempfile.TemporaryDirectory(prefix="mimir-bench-repl-") as tmp:
        primary_port, replica_port = free_port(), free_port()
        processes = [_start(Path(tmp) / "primary", primary_port)]
        try:
            processes.append(_start(Path(tmp) / "replica", replica_port, primary_port))

            def linked() -> bool:
                try:
                    with redis.Redis(port=replica_port, socket_timeout=1) as client:
                        return client.info("replication").get("master_link_status") == "up"
                except redis.RedisError:
                    return False

            wait_for(linked, 15, "the replica to attach")
            url = f"redis://127.0.0.1:{primary_port}/0"
            rates: dict[tuple[int, int], list[float]] = {}
            for _ in range(args.rounds):
                for batch in (1, BATCH):
                    for replicas in (0, 1):
                        rate = asyncio.run(_rate(url, replicas, args.jobs, batch))
                        rates.setdefault((batch, replicas), []).append(rate)
            print(
                f"enqueue, {args.jobs} jobs, median of {args.rounds} (jobs/s; replica on loopback)"
            )
            print(f"{'':24}{'MIN_REPLICAS=0':>16}{'MIN_REPLICAS=1':>16}{'ratio':>8}")
            for batch, label in ((1, "one job per call"), (BATCH, f"batches of {BATCH}")):
                off = statistics.median(rates[(batch, 0)])
                on = statistics.median(rates[(batch, 1)])
                print(f"{label:24}{off:16,.0f}{on:16,.0f}{on / off:8.2f}")
        finally:
            for process in processes:
                process.kill()
                process.wait(timeout=10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
