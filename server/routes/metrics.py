"""``GET /metrics``: Prometheus text format, read from Redis on each scrape.

The server renders the whole cluster's figures, the workers' included: workers add what
they counted into Redis with their heartbeats (:mod:`mimir.core.queue.metrics`: they are
autoscaled, short-lived and often without a published port, so one scrape target here
needs no service discovery, and the counts outlive the workers).

Queue (all workers' view): ``mimir_queue_depth{queue,priority}`` (waiting, not yet
delivered), ``mimir_queue_oldest_job_age_seconds{queue}``, ``mimir_queue_scheduled``,
``mimir_queue_running``, ``mimir_queue_dead``, ``mimir_jobs_total{status}`` (jobs ended,
by final status), ``mimir_job_duration_seconds`` (histogram of finished attempts).

Workers: ``mimir_worker_jobs_total{pool,queue,outcome}`` (attempts by outcome:
``succeeded``, ``failed``, ``retried``, ``cancelled``, ``requeued``),
``mimir_worker_job_duration_seconds{pool,queue,pipeline}`` and
``mimir_worker_step_duration_seconds{pool,plugin,status}`` (histograms; ``pipeline`` and
``plugin`` capped at 200 values each, then ``other``); from the live heartbeats
``mimir_workers_alive{pool}``, ``mimir_workers_busy{pool}`` (running a job),
``mimir_worker_slots{pool}`` (concurrency), ``mimir_worker_slots_busy{pool}`` (jobs
running), ``mimir_worker_memory_bytes{pool,worker}`` (RSS).

Autoscaler: ``mimir_autoscaler_decisions_total{pool,action}`` (``up``/``down``) and
``mimir_pool_desired_workers{pool}``.

Backups: ``mimir_backups_total{outcome}`` (``succeeded``, ``failed``, or a scheduled one
``skipped`` while another ran) and ``mimir_backup_last_success_timestamp_seconds`` (once
a backup succeeded), from :mod:`mimir.server.runs.backups`.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from mimir.core.queue import QueueStatus, WorkerInfo
from mimir.core.queue.client import redis_errors
from mimir.core.queue.metrics import Histogram
from mimir.server.autoscaler import Autoscaler
from mimir.server.deps import SettingsDep
from mimir.server.routes.autoscaler import AutoscalerDep
from mimir.server.routes.queue import QueueDep
from mimir.server.runs.backups import OUTCOMES as BACKUP_OUTCOMES
from mimir.server.runs.backups import read_stats

__all__ = ["router"]

router = APIRouter(tags=["metrics"])

#: Autoscaler decision actions.
ACTIONS = ("up", "down")


@dataclass(eq=False)  # registered as a collector: hashed by identity
class _Snapshot:
    """A collector over figures fetched before the scrape is rendered."""

    status: QueueStatus
    histogram: tuple[list[tuple[float, int]], float, int]
    backups: dict[str, float]
    depth: dict[tuple[str, str], int]
    oldest: dict[str, float | None]
    workers: list[WorkerInfo]
    jobs: dict[tuple[str, ...], float]
    job_time: dict[tuple[str, ...], Histogram]
    step_time: dict[tuple[str, ...], Histogram]
    decisions: dict[tuple[str, str], int]
    desired: dict[str, int]

    def collect(self) -> Iterator[Metric]:
        yield from self._queue()
        yield from self._workers()
        yield from self._autoscaler()
        yield from self._backups()

    def _queue(self) -> Iterator[Metric]:
        status = self.status
        depth = GaugeMetricFamily(
            "mimir_queue_depth",
            "Jobs waiting for a worker (not yet delivered), by queue and priority.",
            labels=["queue", "priority"],
        )
        for (queue, priority), count in sorted(self.depth.items()):
            depth.add_metric([queue, priority], count)
        yield depth
        oldest = GaugeMetricFamily(
            "mimir_queue_oldest_job_age_seconds",
            "Seconds the oldest waiting job of the queue has waited (0: none waits).",
            labels=["queue"],
        )
        for queue, age in sorted(self.oldest.items()):
            oldest.add_metric([queue], age or 0.0)
        yield oldest
        yield GaugeMetricFamily(
            "mimir_queue_scheduled", "Jobs delayed or waiting to retry.", value=status.scheduled
        )
        yield GaugeMetricFamily(
            "mimir_queue_running", "Jobs held by workers.", value=status.running
        )
        yield GaugeMetricFamily(
            "mimir_queue_dead", "Entries in the dead-letter stream.", value=status.dead
        )
        ended = CounterMetricFamily("mimir_jobs", "Jobs ended, by final status.", labels=["status"])
        for name, count in status.totals.items():
            ended.add_metric([name], count)
        yield ended
        buckets, total, _count = self.histogram
        yield HistogramMetricFamily(
            "mimir_job_duration_seconds",
            "Run time of finished job attempts.",
            buckets=[(_le(b), n) for b, n in buckets],
            sum_value=total,
        )

    def _workers(self) -> Iterator[Metric]:
        attempts = CounterMetricFamily(
            "mimir_worker_jobs",
            "Job attempts the workers ended, by pool, queue and outcome (retried: failed with "
            "attempts left; requeued: handed back on shutdown).",
            labels=["pool", "queue", "outcome"],
        )
        for labels, count in sorted(self.jobs.items()):
            if len(labels) == 3:
                attempts.add_metric(list(labels), count)
        yield attempts
        yield _histograms(
            "mimir_worker_job_duration_seconds",
            "Run time of the job attempts workers ended (pipeline: its name, or the job type "
            "without one; at most 200 names, the rest 'other').",
            ["pool", "queue", "pipeline"],
            self.job_time,
        )
        yield _histograms(
            "mimir_worker_step_duration_seconds",
            "Run time of pipeline steps, by plugin and status (at most 200 plugin names, the "
            "rest 'other').",
            ["pool", "plugin", "status"],
            self.step_time,
        )
        pools = sorted({w.pool for w in self.workers} | set(self.desired))
        families = {
            "alive": GaugeMetricFamily(
                "mimir_workers_alive", "Workers with a live heartbeat.", labels=["pool"]
            ),
            "busy": GaugeMetricFamily(
                "mimir_workers_busy", "Live workers running at least one job.", labels=["pool"]
            ),
            "slots": GaugeMetricFamily(
                "mimir_worker_slots",
                "Job slots of the live workers (their concurrency, summed).",
                labels=["pool"],
            ),
            "slots_busy": GaugeMetricFamily(
                "mimir_worker_slots_busy", "Jobs the live workers run now.", labels=["pool"]
            ),
        }
        for pool in pools:
            members = [w for w in self.workers if w.pool == pool]
            families["alive"].add_metric([pool], len(members))
            families["busy"].add_metric([pool], sum(1 for w in members if w.current_jobs))
            families["slots"].add_metric([pool], sum(w.concurrency for w in members))
            families["slots_busy"].add_metric([pool], sum(len(w.current_jobs) for w in members))
        yield from families.values()
        memory = GaugeMetricFamily(
            "mimir_worker_memory_bytes",
            "Resident memory of each live worker process.",
            labels=["pool", "worker"],
        )
        for worker in sorted(self.workers, key=lambda w: (w.pool, w.worker_id)):
            memory.add_metric([worker.pool, worker.worker_id], worker.memory_bytes)
        yield memory

    def _autoscaler(self) -> Iterator[Metric]:
        decisions = CounterMetricFamily(
            "mimir_autoscaler_decisions",
            "Scaling decisions the autoscaler took, by pool and action (up, down).",
            labels=["pool", "action"],
        )
        pools = sorted(set(self.desired) | {pool for pool, _ in self.decisions})
        for pool in pools:
            for action in ACTIONS:
                decisions.add_metric([pool, action], self.decisions.get((pool, action), 0))
        yield decisions
        desired = GaugeMetricFamily(
            "mimir_pool_desired_workers",
            "Workers the pool should run: what its autoscaler asked for while the change "
            "settles, else the workers it runs (not draining).",
            labels=["pool"],
        )
        for pool, count in sorted(self.desired.items()):
            desired.add_metric([pool], count)
        yield desired

    def _backups(self) -> Iterator[Metric]:
        backups = CounterMetricFamily(
            "mimir_backups",
            "Backups ended, by outcome (skipped: a scheduled one while another ran).",
            labels=["outcome"],
        )
        for outcome in BACKUP_OUTCOMES:
            backups.add_metric([outcome], self.backups.get(outcome, 0.0))
        yield backups
        if "last_success" in self.backups:
            yield GaugeMetricFamily(
                "mimir_backup_last_success_timestamp_seconds",
                "When the last backup that succeeded ended (Unix time).",
                value=self.backups["last_success"],
            )


def _le(bound: float) -> str:
    return "+Inf" if math.isinf(bound) else f"{bound:g}"


def _histograms(
    name: str, documentation: str, labels: list[str], series: Mapping[tuple[str, ...], Histogram]
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, documentation, labels=labels)
    for values, histogram in sorted(series.items()):
        if len(values) == len(labels):
            family.add_metric(
                list(values), [(_le(b), n) for b, n in histogram.buckets], histogram.sum
            )
    return family


async def _autoscaler(
    autoscaler: Autoscaler,
) -> tuple[dict[tuple[str, str], int], dict[str, int]]:
    # Redis errors as the queue's own (503 while Redis is away), like the other figures.
    async with redis_errors("read the autoscaler's figures"):
        return await autoscaler.metrics()


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    responses={
        200: {
            "description": "Prometheus text exposition format.",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        }
    },
)
async def metrics(jobs: QueueDep, settings: SettingsDep, autoscaler: AutoscalerDep) -> Response:
    """The queue's, the workers', the autoscaler's and the backups' figures for
    Prometheus (the names and labels: this module's text)."""
    queue, workers = await asyncio.gather(
        asyncio.gather(
            jobs.status(),
            jobs.duration_histogram(),
            read_stats(jobs.redis, settings),
            jobs.queue_figures(),
        ),
        asyncio.gather(jobs.workers(), jobs.worker_metrics(), _autoscaler(autoscaler)),
    )
    status, histogram, backups, (depth, oldest) = queue
    live, (attempts, job_time, step_time), (decisions, desired) = workers
    registry = CollectorRegistry(auto_describe=False)
    snapshot: Any = _Snapshot(
        status,
        histogram,
        backups,
        depth,
        oldest,
        live,
        attempts,
        job_time,
        step_time,
        decisions,
        desired,
    )
    registry.register(snapshot)
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
