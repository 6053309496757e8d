"""Several idle workers stopped together all exit promptly (no loop hangs on shutdown)."""

from __future__ import annotations

import asyncio
import logging
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from mimir.worker.worker import Worker, WorkerConfig
from tests.helpers import RedisServer, WorkerProcess

#: Far longer than a clean stop needs (about a second), far shorter than the grace: a
#: worker whose internal loop hangs on shutdown waits out the grace and fails here.
_GRACE = 60.0
_DEADLINE = 20.0


def _wait_all(workers: list[WorkerProcess], deadline: float) -> dict[int, int | None]:
    """Each worker's exit code once all exited or ``deadline`` (monotonic) passed."""
    codes: dict[int, int | None] = {}
    for worker in workers:
        assert worker.process is not None
        try:
            codes[worker.pid] = worker.process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            codes[worker.pid] = None
    return codes


def test_four_workers_sigtermed_together_all_exit_0_repeatedly(
    make_worker: Callable[..., WorkerProcess],
) -> None:
    for round_no in range(10):
        workers = [
            make_worker(
                concurrency=2, MIMIR_WORKER_GRACE=str(_GRACE), MIMIR_WORKER_HEARTBEAT="0.05"
            )
            for _ in range(4)
        ]
        for worker in workers:
            assert worker.process is not None
            worker.process.send_signal(signal.SIGTERM)
        codes = _wait_all(workers, time.monotonic() + _DEADLINE)
        # An internal loop abandoned after the bounded wait also counts: it did not stop.
        stuck = [w for w in workers if codes[w.pid] != 0 or "did not stop" in w.output()]
        assert not stuck, f"round {round_no}: exit codes {codes}\n" + "\n---\n".join(
            w.output() for w in stuck
        )


def test_a_lost_cancellation_does_not_keep_a_loop_running(
    redis_server: RedisServer,
    data_dir: Path,
    run: Callable[[Awaitable[Any]], Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Python 3.11's ``asyncio.wait_for`` (inside every redis-py socket write) drops a
    cancellation that arrives as the write completes; the loop then carries on. Here the
    scheduler's Redis call swallows every cancellation that way: the worker still stops."""
    worker = Worker(
        WorkerConfig(redis_url=redis_server.url, data_dir=data_dir, heartbeat=0.05, grace=60)
    )
    calls = 0
    called = asyncio.Event()

    async def move_due_losing_cancellation(limit: int = 500) -> float | None:
        nonlocal calls
        calls += 1
        called.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            return None  # what wait_for answers when the inner call had just completed
        return None

    worker.consumer.move_due = move_due_losing_cancellation  # type: ignore[method-assign]

    async def scenario() -> int:
        task = asyncio.create_task(worker.run())
        await asyncio.wait_for(called.wait(), timeout=20)
        worker.stop()
        done, _ = await asyncio.wait([task], timeout=_DEADLINE)
        assert done, "run() did not return after stop()"
        return task.result()

    with caplog.at_level(logging.INFO, logger="mimir.worker"):
        assert run(scenario()) == 0
    assert calls >= 1
    assert "did not stop" not in caplog.text
