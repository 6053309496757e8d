"""``GET /metrics``: Prometheus text format, read from the queue's Redis on each scrape.

``mimir_queue_depth{priority}``, ``mimir_queue_scheduled``, ``mimir_queue_running``,
``mimir_queue_dead``, ``mimir_jobs_total{status}`` (jobs ended, by final status),
``mimir_job_duration_seconds`` (histogram of finished attempts), ``mimir_workers_alive``;
``mimir_backups_total{outcome}`` (backups ended: ``succeeded``, ``failed``, or a scheduled
one ``skipped`` while another ran) and ``mimir_backup_last_success_timestamp_seconds``
(once a backup succeeded), from :mod:`mimir.server.runs.backups`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
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

from mimir.core.queue import QueueStatus
from mimir.server.deps import SettingsDep
from mimir.server.routes.queue import QueueDep
from mimir.server.runs.backups import OUTCOMES, read_stats

__all__ = ["router"]

router = APIRouter(tags=["metrics"])


class _Snapshot:
    """A collector over figures fetched before the scrape is rendered."""

    def __init__(
        self,
        status: QueueStatus,
        histogram: tuple[list[tuple[float, int]], float, int],
        backups: dict[str, float],
    ) -> None:
        self.status = status
        self.histogram = histogram
        self.backups = backups

    def collect(self) -> Iterator[Metric]:
        status = self.status
        depth = GaugeMetricFamily(
            "mimir_queue_depth", "Jobs waiting for a worker, by priority.", labels=["priority"]
        )
        for priority, count in status.by_priority.items():
            depth.add_metric([priority], count)
        yield depth
        yield GaugeMetricFamily(
            "mimir_queue_scheduled", "Jobs delayed or waiting to retry.", value=status.scheduled
        )
        yield GaugeMetricFamily(
            "mimir_queue_running", "Jobs held by workers.", value=status.running
        )
        yield GaugeMetricFamily(
            "mimir_queue_dead", "Entries in the dead-letter stream.", value=status.dead
        )
        yield GaugeMetricFamily(
            "mimir_workers_alive", "Workers with a live heartbeat.", value=status.workers
        )
        ended = CounterMetricFamily("mimir_jobs", "Jobs ended, by final status.", labels=["status"])
        for name, count in status.totals.items():
            ended.add_metric([name], count)
        yield ended
        buckets, total, _count = self.histogram
        yield HistogramMetricFamily(
            "mimir_job_duration_seconds",
            "Run time of finished job attempts.",
            buckets=[("+Inf" if b == float("inf") else f"{b:g}", n) for b, n in buckets],
            sum_value=total,
        )
        backups = CounterMetricFamily(
            "mimir_backups",
            "Backups ended, by outcome (skipped: a scheduled one while another ran).",
            labels=["outcome"],
        )
        for outcome in OUTCOMES:
            backups.add_metric([outcome], self.backups.get(outcome, 0.0))
        yield backups
        if "last_success" in self.backups:
            yield GaugeMetricFamily(
                "mimir_backup_last_success_timestamp_seconds",
                "When the last backup that succeeded ended (Unix time).",
                value=self.backups["last_success"],
            )


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
async def metrics(jobs: QueueDep, settings: SettingsDep) -> Response:
    """The queue's and the backups' figures for Prometheus."""
    status, histogram, backups = await asyncio.gather(
        jobs.status(), jobs.duration_histogram(), read_stats(jobs.redis, settings)
    )
    registry = CollectorRegistry(auto_describe=False)
    snapshot: Any = _Snapshot(status, histogram, backups)
    registry.register(snapshot)
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
