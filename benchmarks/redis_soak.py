"""Redis soak: how much Redis memory each finished job leaves behind, with the run store
releasing what it has stored, and without.

``python -m benchmarks.redis_soak [--seconds 60 | --minutes 5] [--rate 200] [--workers 2]``

For each mode a fresh redis-server (no persistence), a real ``mimir server`` (its run store
in a fresh SQLite file) and ``--workers`` real workers run; jobs (one ``Debug.echo`` step)
are pushed at a steady ``--rate`` per second for the duration, then the run waits until
every job has ended (and, with the run store, every outcome is stored). Figures:
``used_memory`` (``INFO memory``) growth from before the first job to the end, per
finished job, and the same without the outcome stream; keys per job.

- ``release``: the server's ingest stores each run, then releases the job's Redis copies
  (``JobQueue.release``: the record, its log stream and index entry go; what waiters and
  idempotency need stays).
- ``no-release``: the same server with ``MIMIR_INGEST=off`` (nothing consumes the outcome
  stream, nothing is released): what Redis holds when the run store does not take over,
  the record and done list kept for the job TTL (24 h) plus the unconsumed outcomes.

The figure to meet is <= 500 bytes per finished job with release (issue 9; before the run
store, a 5-minute soak at 200 jobs/s grew Redis by ~5.3 KB per job).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks._processes import ServerProcesses, wait_for

PIPELINE = {
    "name": "noop",
    "steps": [{"name": "noop", "plugin": "Debug.echo", "config": {"value": 1}}],
}
PREFIX = "mimir:"
#: Seconds between pushes (each pushes rate * TICK jobs in one round trip).
TICK = 0.05
#: Seconds between progress lines.
REPORT_EVERY = 10.0


@dataclass
class Result:
    mode: str
    pushed: int
    finished: int
    seconds: float
    before: int
    after: int
    outcomes_bytes: int
    keys_before: int
    keys_after: int
    stored: int | None

    @property
    def per_job(self) -> float:
        return (self.after - self.before) / max(1, self.finished)

    @property
    def per_job_without_outcomes(self) -> float:
        return (self.after - self.before - self.outcomes_bytes) / max(1, self.finished)

    @property
    def keys_per_job(self) -> float:
        return (self.keys_after - self.keys_before) / max(1, self.finished)


def _processes(tmp: Path, workers: int, concurrency: int, release: bool) -> ServerProcesses:
    """Redis, a server and ``workers`` workers; ``release`` off runs the server without
    the run ingest (``MIMIR_INGEST=off``): the queue alone."""
    env = {} if release else {"MIMIR_INGEST": "off"}
    return ServerProcesses(tmp, workers=workers, concurrency=concurrency, env=env)


async def _push(redis_url: str, rate: float, seconds: float) -> int:
    from mimir.core.queue import JobQueue, JobSpec, connect

    queue = JobQueue(connect(redis_url), PREFIX)
    spec = JobSpec(payload={"pipeline": PIPELINE, "context": {}}, pipeline="noop")
    pushed = 0
    started = time.monotonic()
    last_report = started
    try:
        while (elapsed := time.monotonic() - started) < seconds:
            due = int(rate * min(elapsed + TICK, seconds)) - pushed
            if due > 0:
                await queue.enqueue_many([spec] * due)
                pushed += due
            if time.monotonic() - last_report >= REPORT_EVERY:
                last_report = time.monotonic()
                info = await queue.redis.info("memory")
                print(
                    f"  {elapsed:5.0f} s  {pushed:>8,} pushed  "
                    f"used_memory {int(info['used_memory']) / 1e6:8.2f} MB",
                    flush=True,
                )
            await asyncio.sleep(max(0.0, started + (pushed / rate) - time.monotonic()))
    finally:
        await queue.aclose()
    return pushed


def _finished(client: Any) -> int:
    totals = client.hgetall(f"{PREFIX}totals")
    return sum(int(v) for v in totals.values())


def _outcomes_settled(client: Any) -> bool:
    stream = f"{PREFIX}outcomes"
    if not client.exists(stream):
        return True
    pending = client.xpending(stream, "runstore")["pending"] if client.xinfo_groups(stream) else 0
    return int(client.xlen(stream)) == 0 and int(pending) == 0


def soak(mode: str, seconds: float, rate: float, workers: int, concurrency: int) -> Result:
    import httpx
    import redis

    release = mode == "release"
    tmp = Path(tempfile.mkdtemp(prefix=f"mimir-soak-{mode}-"))
    processes = _processes(tmp, workers, concurrency, release)
    try:
        processes.start()
        client = redis.Redis.from_url(processes.redis_url, decode_responses=True)
        time.sleep(2)  # the heartbeats and the server's own keys settle
        before = int(client.info("memory")["used_memory"])
        keys_before = int(client.dbsize())
        started = time.monotonic()
        print(f"{mode}: {rate:g} jobs/s for {seconds:g} s ({workers} workers)", flush=True)
        pushed = asyncio.run(_push(processes.redis_url, rate, seconds))
        wait_for(lambda: _finished(client) >= pushed, 600, "every job to end")
        if release:
            wait_for(lambda: _outcomes_settled(client), 600, "the ingest to catch up")
            time.sleep(1)  # the last release after the last acknowledgement
        elapsed = time.monotonic() - started
        after = int(client.info("memory")["used_memory"])
        keys_after = int(client.dbsize())
        outcomes = int(client.memory_usage(f"{PREFIX}outcomes", samples=0) or 0)
        stored = None
        if release:
            answer = httpx.get(f"http://127.0.0.1:{processes.api_port}/api/v1/runs/status")
            stored = int(answer.json()["runs"])
        client.close()
        return Result(
            mode, pushed, _finished_now(processes.redis_url), elapsed, before, after,
            outcomes, keys_before, keys_after, stored,
        )  # fmt: skip
    finally:
        processes.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def _finished_now(redis_url: str) -> int:
    import redis

    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        return _finished(client)
    finally:
        client.close()


def report(results: list[Result]) -> list[str]:
    lines = [
        "",
        f"{'mode':<11} {'jobs':>8} {'s':>6} {'Redis growth':>13} {'bytes/job':>10} "
        f"{'w/o outcomes':>13} {'keys/job':>9} {'runs stored':>12}",
    ]
    for r in results:
        lines.append(
            f"{r.mode:<11} {r.finished:>8,} {r.seconds:>6.0f} "
            f"{(r.after - r.before) / 1e6:>10.2f} MB {r.per_job:>10,.0f} "
            f"{r.per_job_without_outcomes:>13,.0f} {r.keys_per_job:>9.2f} "
            f"{'-' if r.stored is None else f'{r.stored:,}':>12}"
        )
    by_mode = {r.mode: r for r in results}
    if "release" in by_mode:
        figure = by_mode["release"].per_job
        verdict = "meets" if figure <= 500 else "misses"
        lines.append(
            f"\nwith the run store and release: {figure:,.0f} bytes of Redis per finished job "
            f"({verdict} the <= 500 bytes target)"
        )
    if "release" in by_mode and "no-release" in by_mode:
        ratio = by_mode["no-release"].per_job / max(1.0, by_mode["release"].per_job)
        lines.append(
            f"without release: {by_mode['no-release'].per_job:,.0f} bytes/job ({ratio:.1f}x)"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.redis_soak", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--seconds", type=float, default=60.0, help="push duration (60)")
    parser.add_argument("--minutes", type=float, help="push duration in minutes instead")
    parser.add_argument("--rate", type=float, default=200.0, help="jobs per second (200)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (2)")
    parser.add_argument("--concurrency", type=int, default=20, help="jobs per worker (20)")
    parser.add_argument(
        "--modes", default="release,no-release", help="release,no-release (default both)"
    )
    args = parser.parse_args(argv)
    seconds = args.minutes * 60 if args.minutes else args.seconds
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = set(modes) - {"release", "no-release"}
    if unknown:
        parser.error(f"unknown mode(s) {', '.join(sorted(unknown))}")
    results = [soak(mode, seconds, args.rate, args.workers, args.concurrency) for mode in modes]
    print("\n".join(report(results)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
