"""Rules of the worker pool that both backends follow: how many, their numbers, how a stop
spends its grace, and what their heartbeats say about their health.

Qt-free and engine-free: plain functions over numbers and sets.
"""

from __future__ import annotations

from dataclasses import dataclass

from mimir.app.cluster.base import ClusterError
from mimir.core.limits import Limits
from mimir.core.pools import PoolSpec

__all__ = [
    "ScalePlan",
    "StopBudget",
    "check_pool_count",
    "check_worker_count",
    "plan_scale",
    "worker_health",
]


def check_worker_count(workers: int, limits: Limits) -> int:
    """``workers`` if it is a worker count this cluster may run, else :class:`ClusterError`
    (before anything starts: 1000 would otherwise create 1000 containers or processes)."""
    if workers < 0:
        raise ClusterError(f"workers must be 0 or more, got {workers}")
    if workers > limits.max_workers:
        raise ClusterError(
            f"refusing {workers} workers: a cluster runs at most {limits.max_workers} "
            "(raise MIMIR_MAX_WORKERS to allow more)"
        )
    return workers


def check_pool_count(pool: PoolSpec, workers: int, limits: Limits) -> int:
    """``workers`` if ``pool`` may run that many (the cluster's limit, the pool's ``max``),
    else :class:`ClusterError`."""
    check_worker_count(workers, limits)
    if pool.max is not None and workers > pool.max:
        raise ClusterError(
            f"refusing {workers} workers in pool {pool.name!r}: its max is {pool.max}"
        )
    return workers


@dataclass(frozen=True)
class ScalePlan:
    """What to do to run exactly N workers, by replica number."""

    #: Numbers of the running workers that keep running.
    keep: list[int]
    #: Numbers of the running workers to stop (the highest ones).
    stop: list[int]
    #: Numbers to start: the lowest free ones.
    start: list[int]


def plan_scale(running: list[int], workers: int) -> ScalePlan:
    """Keep the ``workers`` lowest-numbered of ``running``, stop the rest, and start the
    lowest free numbers until there are ``workers``."""
    ordered = sorted(running)
    keep, stop = ordered[:workers], ordered[workers:]
    used = set(keep)
    start: list[int] = []
    number = 0
    while len(keep) + len(start) < workers:
        number += 1
        if number not in used:
            start.append(number)
    return ScalePlan(keep, stop, start)


@dataclass(frozen=True)
class StopBudget:
    """How a stop spends ``grace`` seconds on a worker: first SIGTERM, then running jobs get
    :attr:`finish` seconds; then a second SIGTERM makes the worker hand back what still runs,
    within :attr:`hand_back` seconds; then SIGKILL.

    The worker's own grace (``MIMIR_WORKER_GRACE``) is fixed when it starts; the second
    SIGTERM is what makes a shorter ``down --grace`` reach it.
    """

    finish: float
    hand_back: float

    #: Longest time a worker needs to hand its jobs back and exit.
    HAND_BACK = 5.0

    @classmethod
    def of(cls, grace: float) -> StopBudget:
        grace = max(0.0, grace)
        hand_back = min(cls.HAND_BACK, grace / 2)
        return cls(finish=grace - hand_back, hand_back=hand_back)


def worker_health(expected: set[str], registered: set[str] | None) -> str:
    """``healthy`` when every expected worker has a live heartbeat, ``starting`` while some
    have not, ``unhealthy`` when the API does not answer (``registered`` is ``None``)."""
    if registered is None:
        return "unhealthy"
    return "healthy" if expected <= registered else "starting"
