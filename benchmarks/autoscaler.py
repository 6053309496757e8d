"""Autoscaler: how long from a burst of jobs to the target replicas, and the Redis commands
one evaluation costs.

``python -m benchmarks.autoscaler [--period 1] [--jobs 300]``

**Reaction.** For each scenario a fresh redis-server and a real ``mimir server`` run as
`mimir cluster up` would start it (``MIMIR_CLUSTER_BACKEND=local``, ``MIMIR_PROJECT``,
``MIMIR_POOLS``), every ``--period`` seconds, with a scaling command that only records
its call (``MIMIR_AUTOSCALE_COMMAND``): this measures the autoscaler (lease, figures,
decision, record, command), not how fast a backend starts workers. A burst of jobs is
enqueued in one call (no workers: they stay queued); the time is from the burst to the
decision that asks for the target replicas, in seconds and in evaluation periods:

- ``up 1->4``: min 1, max 4, target 10 per replica: one decision (step_up 4);
- ``wake 0->1``: min 0, one job: a pool at zero wakes at once;
- ``up 1->12``: max 12, step_up 4, cooldown_up 3 s: three decisions, paced by the cooldown.

**Cost.** One evaluation of :class:`mimir.server.autoscaler.Autoscaler` in this process,
as the lease holder, against a redis-server of its own (nothing else talks to it), with
1, 4 and 16 autoscaled pools (two queues each) and 4 workers' heartbeats a pool: the
commands Redis ran (``INFO commandstats`` before and after, the INFO calls left out;
a script's own commands count), by command, and the round trips this process made (each
command sent alone and each pipeline): the lease renewal, the policies and state
together, and :meth:`JobQueue.pool_figures`'s two pipelines.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks._processes import ServerProcesses, free_port, wait_for

RECORDER = "import sys\nsys.exit(0)\n"


@dataclass
class Scenario:
    name: str
    pool: dict[str, Any]
    jobs: int
    target: int


@dataclass
class Reaction:
    scenario: Scenario
    period: float
    decisions: int
    seconds: float

    @property
    def periods(self) -> float:
        return self.seconds / self.period


def scenarios(jobs: int) -> list[Scenario]:
    policy = {"target_backlog": 10}
    return [
        Scenario("up 1->4", {"min": 1, "max": 4, "autoscale": policy}, jobs, 4),
        Scenario("wake 0->1", {"min": 0, "max": 4, "autoscale": policy}, 1, 1),
        Scenario(
            "up 1->12",
            {"min": 1, "max": 12, "autoscale": {**policy, "step_up": 4, "cooldown_up": 3}},
            jobs,
            12,
        ),
    ]


async def _heartbeat(
    client: Any, prefix: str, worker_id: str, pool: str, queues: list[str]
) -> None:
    """The heartbeat of an idle worker of ``pool`` (nothing refreshes it, nothing expires
    it): what the autoscaler counts as one of the pool's replicas."""
    await client.hset(
        f"{prefix}worker:{worker_id}",
        mapping={
            "worker_id": worker_id,
            "pool": pool,
            "queues": json.dumps(queues),
            "current_jobs": "[]",
            "last_heartbeat": datetime.now(UTC).isoformat(),
        },
    )
    await client.zadd(f"{prefix}workers", {worker_id: time.time()})


async def _heartbeats(redis_url: str, pool: str, count: int) -> None:
    """Heartbeats of ``count`` idle workers of ``pool`` (the replicas a pool at ``min``
    runs)."""
    from mimir.core.queue import connect

    client = connect(redis_url)
    try:
        for n in range(count):
            await _heartbeat(client, "mimir:", f"bench-{pool}-{n}", pool, [pool])
    finally:
        await client.aclose()


async def _enqueue(redis_url: str, count: int) -> None:
    from mimir.core.queue import JobQueue, JobSpec, connect

    queue = JobQueue(connect(redis_url))
    try:
        await queue.enqueue_many([JobSpec(payload={}) for _ in range(count)])
    finally:
        await queue.aclose()


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).astimezone(UTC).timestamp()


def react(scenario: Scenario, period: float) -> Reaction:
    import httpx

    from mimir.core.pools import ClusterFile, pools_to_env

    tmp = Path(tempfile.mkdtemp(prefix="mimir-bench-autoscaler-"))
    script = tmp / "scale.py"
    script.write_text(RECORDER)
    cluster = ClusterFile.model_validate(
        {"autoscaler": {"period": max(0.5, period)}, "pools": {"default": scenario.pool}}
    )
    env = {
        "MIMIR_CLUSTER_BACKEND": "local",
        "MIMIR_PROJECT": "bench",
        "MIMIR_POOLS": pools_to_env(cluster),
        "MIMIR_AUTOSCALE_PERIOD": str(period),
        "MIMIR_AUTOSCALE_COMMAND": shlex.join([sys.executable, str(script)]),
    }
    processes = ServerProcesses(tmp, env=env)
    try:
        processes.start()
        with httpx.Client(base_url=processes.base_url, timeout=10) as client:

            def state() -> dict[str, Any]:
                return dict(client.get("/api/v1/autoscaler").json())

            asyncio.run(_heartbeats(processes.redis_url, "default", scenario.pool["min"]))
            wait_for(lambda: state()["leader"], 30, "the autoscaler's lease")
            # Had it evaluated before the heartbeats came, it brought the pool to min:
            # the burst comes once that change's cooldown is over.
            cooldown = float(scenario.pool["autoscale"].get("cooldown_up", 15.0))

            def cooled() -> bool:
                last = state()["pools"]["default"]["last_change"]
                return last is None or time.time() - _epoch(last) > cooldown

            wait_for(cooled, 60, "the cooldown of the change to min")
            before = len(state()["decisions"])
            burst = time.time()
            asyncio.run(_enqueue(processes.redis_url, scenario.jobs))
            wait_for(
                lambda: any(d["to"] == scenario.target for d in state()["decisions"]),
                120,
                f"a decision for {scenario.target} replicas",
            )
            decisions = state()["decisions"]
        reached = next(d for d in decisions if d["to"] == scenario.target)
        at = _epoch(reached["time"])
        return Reaction(scenario, period, len(decisions) - before, max(0.0, at - burst))
    finally:
        processes.stop()
        shutil.rmtree(tmp, ignore_errors=True)


# -- commands per evaluation ---------------------------------------------------------------


class _RoundTrips:
    """Counts this process's round trips to Redis while entered: each command sent alone
    and each pipeline (however many commands it holds)."""

    def __init__(self) -> None:
        self.count = 0

    def __enter__(self) -> _RoundTrips:
        from redis.asyncio.client import Pipeline, Redis

        self._saved = (Redis.execute_command, Pipeline.execute)
        single, pipelined = self._saved

        async def execute_command(client: Any, *args: Any, **options: Any) -> Any:
            self.count += 1
            return await single(client, *args, **options)

        async def execute(pipe: Any, *args: Any, **options: Any) -> Any:
            self.count += 1
            return await pipelined(pipe, *args, **options)

        Redis.execute_command = execute_command  # type: ignore[method-assign,assignment]
        Pipeline.execute = execute  # type: ignore[method-assign,assignment]
        return self

    def __exit__(self, *exc: object) -> None:
        from redis.asyncio.client import Pipeline, Redis

        Redis.execute_command, Pipeline.execute = self._saved  # type: ignore[method-assign]


def _commandstats(client: Any) -> dict[str, int]:
    stats = client.info("commandstats")
    return {
        name.removeprefix("cmdstat_"): int(value["calls"])
        for name, value in stats.items()
        if name != "cmdstat_info"
    }


async def _evaluation_cost(redis_url: str, pools: int, workers: int) -> dict[str, int]:
    import redis

    from mimir.core.pools import ClusterFile, pools_to_env
    from mimir.core.queue import JobQueue, JobSpec, connect
    from mimir.core.settings import Settings
    from mimir.server.autoscaler import Autoscaler

    cluster = ClusterFile.model_validate(
        {
            "pools": {
                f"p{n}": {
                    "queues": [f"q{n}a", f"q{n}b"],
                    "min": 0,
                    "max": 64,
                    "autoscale": {"target_backlog": 1000},
                }
                for n in range(pools)
            }
        }
    )
    prefix = f"bench{pools}:"
    environ = {
        "REDIS_URL": redis_url,
        "MIMIR_KEY_PREFIX": prefix,
        "MIMIR_CLUSTER_BACKEND": "local",
        "MIMIR_PROJECT": "bench",
        "MIMIR_POOLS": pools_to_env(cluster),
    }
    client = connect(redis_url)
    queue = JobQueue(client, prefix)
    # Work in every queue, and heartbeats of `workers` workers a pool.
    for n in range(pools):
        for suffix in "ab":
            await queue.enqueue_many([JobSpec(payload={}, queue=f"q{n}{suffix}") for _ in range(5)])
        for w in range(workers):
            await _heartbeat(client, prefix, f"w{n}-{w}", f"p{n}", [f"q{n}a", f"q{n}b"])
    autoscaler = Autoscaler(Settings.from_env(environ), client, environ=environ)
    await autoscaler.tick()  # seeds the policies, takes the lease, evaluates
    # The second evaluation is measured: the one every period costs (it changes nothing:
    # 10 jobs at 1000 a replica want fewer than the 4 workers, low for 0 s).
    sync = redis.Redis.from_url(redis_url)
    trips = _RoundTrips()
    try:
        before = _commandstats(sync)
        with trips:
            await autoscaler.tick()
        after = _commandstats(sync)
    finally:
        sync.close()
        await autoscaler._close()
        await client.aclose()
    counts = {name: after[name] - before.get(name, 0) for name in after}
    return {**{k: v for k, v in counts.items() if v}, "round trips": trips.count}


def costs(pool_counts: list[int], workers: int) -> list[tuple[int, dict[str, int]]]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not on PATH")
    tmp = Path(tempfile.mkdtemp(prefix="mimir-bench-autoscaler-redis-"))
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(tmp)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    try:
        import redis

        probe = redis.Redis.from_url(url)

        def up() -> bool:
            try:
                return bool(probe.ping())
            except redis.RedisError:
                return False

        wait_for(up, 10, "redis-server")
        probe.close()
        return [(n, asyncio.run(_evaluation_cost(url, n, workers))) for n in pool_counts]
    finally:
        process.terminate()
        process.wait(timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)


def report(
    reactions: list[Reaction], cost: list[tuple[int, dict[str, int]]], workers: int
) -> list[str]:
    lines = ["", "Burst to target replicas (decision recorded; the command only records):"]
    head = ("scenario", "jobs", "period", "decisions", "seconds", "periods")
    lines.append("  {:<11} {:>5} {:>7} {:>9} {:>8} {:>8}".format(*head))
    for r in reactions:
        lines.append(
            f"  {r.scenario.name:<11} {r.scenario.jobs:>5} {r.period:>6g}s {r.decisions:>9}"
            f" {r.seconds:>8.2f} {r.periods:>8.2f}"
        )
    lines += ["", f"Redis commands per evaluation (lease holder, {workers} workers a pool):"]
    lines.append(f"  {'pools':>5} {'queues':>6} {'trips':>5} {'commands':>8}  by command")
    for pools, counts in cost:
        counts = dict(counts)
        trips = counts.pop("round trips")
        by = ", ".join(f"{name} {n}" for name, n in sorted(counts.items(), key=lambda x: -x[1]))
        lines.append(f"  {pools:>5} {pools * 2:>6} {trips:>5} {sum(counts.values()):>8}  {by}")
    lines.append(
        "  (commands as Redis counts them: the lease renewal's script adds its get and pexpire)"
    )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.autoscaler", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--period", type=float, default=1.0, help="evaluation period, s (1)")
    parser.add_argument("--jobs", type=int, default=300, help="jobs of a burst (300)")
    parser.add_argument("--workers", type=int, default=4, help="heartbeats a pool (4)")
    args = parser.parse_args(argv)
    os.environ.setdefault("MIMIR_LOG_LEVEL", "WARNING")
    reactions = []
    for scenario in scenarios(args.jobs):
        print(f"{scenario.name}: ...", flush=True)
        reactions.append(react(scenario, args.period))
    cost = costs([1, 4, 16], args.workers)
    print("\n".join(report(reactions, cost, args.workers)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
