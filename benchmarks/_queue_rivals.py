"""arq and Celery set up to run the same no-op pipeline job as Mimir's queue benchmark.

Used by :mod:`benchmarks.queue` (worker subprocesses and clients); the Redis URL comes
from ``BENCH_REDIS_URL``. Each worker prints ``READY`` once it takes jobs.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

from mimir.core.jobs import Attempt, run_pipeline_job

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
#: Jobs one arq worker runs at once (Mimir's workers run as many).
CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "10"))
#: arq polls its queue and its results; this is how often (seconds).
ARQ_POLL = float(os.environ.get("BENCH_ARQ_POLL", "0.001"))


async def _run(payload: dict[str, Any]) -> Any:
    return await run_pipeline_job(payload, Attempt(job_id="bench", attempt=1, worker_id="bench"))


# -- arq ---------------------------------------------------------------------------------


async def arq_noop(ctx: dict[str, Any], payload: dict[str, Any]) -> Any:
    """The no-op pipeline job, as an arq function."""
    return await _run(payload)


async def _arq_ready(ctx: dict[str, Any]) -> None:
    print("READY", flush=True)


def arq_settings() -> Any:
    from arq.connections import RedisSettings

    class WorkerSettings:
        functions = [arq_noop]
        redis_settings = RedisSettings.from_dsn(REDIS_URL)
        max_jobs = CONCURRENCY
        poll_delay = ARQ_POLL
        on_startup = _arq_ready
        keep_result = 3600
        handle_signals = True

    return WorkerSettings


# -- Celery ------------------------------------------------------------------------------


def _celery_app() -> Any:
    from celery import Celery
    from celery.signals import worker_ready

    app = Celery("mimir_bench", broker=REDIS_URL, backend=REDIS_URL)
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        worker_prefetch_multiplier=CONCURRENCY,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        task_acks_late=False,
    )
    loop = asyncio.new_event_loop()

    @app.task(name="noop")
    def celery_noop(payload: dict[str, Any]) -> Any:
        return loop.run_until_complete(_run(payload))

    @worker_ready.connect(weak=False)
    def _ready(**_: Any) -> None:
        print("READY", flush=True)

    return app


celery_app = _celery_app() if "celery" in sys.modules or os.environ.get("BENCH_CELERY") else None


def main(argv: list[str]) -> int:
    if argv[:1] == ["arq-worker"]:
        from arq import run_worker

        run_worker(arq_settings())
        return 0
    print("usage: python -m benchmarks._queue_rivals arq-worker", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
