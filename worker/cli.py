"""``mimir worker``: run a worker process that drains the job queue."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

__all__ = ["main"]


def _parser(default_concurrency: int) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mimir worker", description="Drain the Mimir job queue (REDIS_URL)."
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=default_concurrency,
        help=f"jobs run at once (WORKER_CONCURRENCY, default {default_concurrency})",
    )
    parser.add_argument(
        "--queues",
        default=None,
        help="comma-separated queues to serve (default: the pool's name), e.g. default,gpu",
    )
    parser.add_argument(
        "--pool",
        default=os.environ.get("MIMIR_WORKER_POOL") or "default",
        help="the worker pool this worker belongs to (MIMIR_WORKER_POOL, default: default)",
    )
    parser.add_argument(
        "--job-types",
        default=os.environ.get("MIMIR_WORKER_JOB_TYPES") or None,
        help="comma-separated job types it runs, e.g. pipeline (MIMIR_WORKER_JOB_TYPES, "
        "default: all); a job of another type fails at once",
    )
    parser.add_argument(
        "--grace",
        type=float,
        default=None,
        help="seconds running jobs get to finish after SIGTERM (MIMIR_WORKER_GRACE, 30)",
    )
    parser.add_argument(
        "--lease",
        type=float,
        default=None,
        help="seconds after which a silent worker's jobs are taken over (MIMIR_WORKER_LEASE, 30)",
    )
    parser.add_argument("--redis-url", default=None, help="Redis URL (default: REDIS_URL)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``mimir worker``; answers the exit code."""
    # httpx (imported by some plugins) pulls in its command-line client, with click,
    # rich and pygments (~5 MB), when they are installed; a worker never uses it.
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
    from mimir.core.logfiles import log_file_handler
    from mimir.core.logtext import log_formatter, quiet_url_loggers
    from mimir.core.settings import Settings, normalise_redis_url

    try:
        settings = Settings.from_env()
    except ValueError as exc:  # e.g. MIMIR_LOG_FORMAT=xml: said before anything starts
        print(f"mimir worker: {exc}", file=sys.stderr)
        return 2
    args = _parser(settings.worker_concurrency).parse_args(argv)
    handlers: list[logging.Handler] = [logging.StreamHandler()]
    if (file_handler := log_file_handler(settings.log_dir, "worker")) is not None:
        handlers.append(file_handler)  # MIMIR_LOG_DIR
    for handler in handlers:
        # Job ids, pipeline names and errors come from whoever enqueued: one record, one line
        # (text through printable, JSON escaped); MIMIR_LOG_FORMAT=json adds the job's context.
        text = "%(asctime)s %(levelname)s %(name)s: %(message)s"
        handler.setFormatter(log_formatter(settings.log_format, text))
    logging.basicConfig(level=getattr(logging, settings.log_level, logging.INFO), handlers=handlers)
    quiet_url_loggers()  # plugins' URLs may carry keys in their query strings
    from mimir.core.pools import validate_pool_name

    try:
        pool = validate_pool_name(args.pool)
    except ValueError as exc:
        print(f"mimir worker: --pool: {exc}", file=sys.stderr)
        return 2
    queues = [q.strip() for q in (args.queues or pool).split(",") if q.strip()]
    job_types = None
    if args.job_types is not None:
        job_types = [t.strip() for t in args.job_types.split(",") if t.strip()] or None
    if not queues:
        print("mimir worker: --queues needs at least one name", file=sys.stderr)
        return 2
    if args.concurrency < 1:
        print("mimir worker: --concurrency must be at least 1", file=sys.stderr)
        return 2
    from mimir.worker.worker import WorkerConfig, run_worker

    try:
        config = WorkerConfig.from_settings(
            settings,
            concurrency=args.concurrency,
            queues=queues,
            pool=pool,
            job_types=job_types,
            grace=args.grace,
            lease=args.lease,
            redis_url=normalise_redis_url(args.redis_url) if args.redis_url else None,
        )
        from mimir.core.queue.connection import check_redis_password_file

        check_redis_password_file()  # MIMIR_REDIS_PASSWORD_FILE, before anything starts
    except ValueError as exc:
        print(f"mimir worker: {exc}", file=sys.stderr)
        return 2
    from mimir.core import telemetry

    # OTEL_* environment: a span per job attempt, per step and per outbound HTTP call.
    telemetry.configure_tracing("mimir-worker")
    try:
        return asyncio.run(run_worker(config))
    finally:
        telemetry.shutdown_tracing()  # export what is buffered
