"""``mimir enqueue FILE.yaml``: put pipeline jobs on the queue straight through Redis."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mimir enqueue",
        description="Validate a pipeline file and queue it as jobs (REDIS_URL).",
    )
    parser.add_argument("file", help="pipeline YAML file")
    parser.add_argument("--count", type=int, default=1, help="how many jobs (default 1)")
    parser.add_argument(
        "--priority", choices=["high", "normal", "low"], default="normal", help="default normal"
    )
    parser.add_argument("--context", default="{}", help="JSON object seeding the context")
    parser.add_argument("--queue", default="default", help="worker pool (default: default)")
    parser.add_argument("--timeout", default=None, help="per-attempt timeout, e.g. 90s")
    parser.add_argument("--max-retries", type=int, default=2, help="retries after failure (2)")
    parser.add_argument("--delay", default=None, help="run no earlier than this, e.g. 10s")
    parser.add_argument("--idempotency-key", default=None, help="dedupe key (one job only)")
    parser.add_argument(
        "--wait", action="store_true", help="wait for the jobs to end and print their records"
    )
    parser.add_argument(
        "--wait-timeout", default="10m", help="give up waiting after this (default 10m)"
    )
    return parser


async def _enqueue(args: argparse.Namespace, options: dict[str, Any], context: Any) -> int:
    from mimir.core import telemetry
    from mimir.core.durations import parse_duration
    from mimir.core.jobs import pipeline_job
    from mimir.core.pipeline import load_pipeline
    from mimir.core.queue import JobQueue, JobStatus, QueueError, connect
    from mimir.core.settings import Settings

    settings = Settings.from_env()
    pipeline = await asyncio.to_thread(load_pipeline, args.file)
    redis = connect(
        settings.redis_url,
        min_replicas=settings.redis_min_replicas,
        wait_timeout_ms=settings.redis_wait_timeout_ms,
    )
    queue = JobQueue(redis, settings.key_prefix, settings.job_ttl)
    try:
        specs = [pipeline_job(pipeline, context, **options) for _ in range(args.count)]
        started = time.perf_counter()
        records = []
        # OTEL_* environment: the command starts the jobs' trace (one for the batch).
        telemetry.configure_tracing("mimir-cli")
        try:
            with telemetry.span(f"enqueue {pipeline.name}"):
                # One script call per 1,000 jobs: each chunk is enqueued whole or not at
                # all (a full Redis refuses a chunk before it writes anything).
                for first in range(0, len(specs), 1000):
                    records += await queue.enqueue_many(specs[first : first + 1000])
        except QueueError as exc:
            if not records:
                raise
            for record in records:
                print(record.job_id)
            print(
                f"mimir enqueue: {len(records)} of {len(specs)} job(s) were enqueued (ids "
                f"above), then: {exc}",
                file=sys.stderr,
            )
            return 1
        finally:
            telemetry.shutdown_tracing()
        elapsed = time.perf_counter() - started
        for record in records:
            print(record.job_id)
        print(
            f"enqueued {len(records)} job(s) of {pipeline.name!r} ({args.priority}) "
            f"in {elapsed * 1000:.1f} ms",
            file=sys.stderr,
        )
        if not args.wait:
            return 0
        deadline = time.monotonic() + parse_duration(args.wait_timeout)
        failed = 0
        for record in records:
            result = await queue.wait(record.job_id, max(0.0, deadline - time.monotonic()))
            print(result.job.model_dump_json())
            if result.timed_out or result.job.status is not JobStatus.succeeded:
                failed += 1
        return 1 if failed else 0
    except QueueError as exc:
        print(f"mimir enqueue: {exc}", file=sys.stderr)
        return 1
    finally:
        await queue.aclose()


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``mimir enqueue``; answers the exit code."""
    from mimir.core.durations import parse_duration
    from mimir.core.errors import MimirError

    args = _parser().parse_args(argv)
    if args.count < 1:
        print("mimir enqueue: --count must be at least 1", file=sys.stderr)
        return 2
    try:
        context = json.loads(args.context)
        if not isinstance(context, dict):
            raise ValueError("not a JSON object")
    except ValueError as exc:
        print(f"mimir enqueue: --context must be a JSON object ({exc})", file=sys.stderr)
        return 2
    options: dict[str, Any] = {
        "priority": args.priority,
        "queue": args.queue,
        "max_retries": args.max_retries,
        "idempotency_key": args.idempotency_key,
    }
    try:
        if args.timeout is not None:
            options["timeout"] = parse_duration(args.timeout)
        if args.delay is not None:
            options["delay"] = parse_duration(args.delay)
        parse_duration(args.wait_timeout)
    except ValueError as exc:
        print(f"mimir enqueue: {exc}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_enqueue(args, options, context))
    except MimirError as exc:
        print(f"mimir enqueue: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:  # pydantic: bad --queue name and the like
        print(f"mimir enqueue: {exc}", file=sys.stderr)
        return 2
