"""The worker-pool rules both backends follow: numbering, the cap, how a stop spends grace."""

from __future__ import annotations

import pytest

from mimir.app.cluster.base import ClusterError
from mimir.app.cluster.worker_pool import (
    ScalePlan,
    StopBudget,
    check_worker_count,
    plan_scale,
    worker_health,
)
from mimir.core.limits import Limits


def test_scaling_keeps_the_lowest_numbers_and_fills_gaps() -> None:
    plan = plan_scale([1, 3, 4], 2)
    assert (plan.keep, plan.stop, plan.start) == ([1, 3], [4], [])
    plan = plan_scale([1, 3], 4)
    assert (plan.keep, plan.stop, plan.start) == ([1, 3], [], [2, 4])
    assert plan_scale([2], 0) == ScalePlan([], [2], [])


def test_the_worker_count_is_capped_by_the_limit() -> None:
    assert check_worker_count(64, Limits()) == 64
    with pytest.raises(ClusterError, match="refusing 65 workers: a cluster runs at most 64"):
        check_worker_count(65, Limits())
    with pytest.raises(ClusterError, match=r"at most 3 .*MIMIR_MAX_WORKERS"):
        check_worker_count(4, Limits.from_env({"MIMIR_MAX_WORKERS": "3"}))
    with pytest.raises(ClusterError, match="0 or more"):
        check_worker_count(-1, Limits())


@pytest.mark.parametrize(
    ("grace", "finish", "hand_back"), [(30, 25, 5), (5, 2.5, 2.5), (0, 0, 0), (-1, 0, 0)]
)
def test_a_stop_keeps_time_for_the_hand_back(grace: float, finish: float, hand_back: float) -> None:
    assert StopBudget.of(grace) == StopBudget(finish, hand_back)


def test_worker_health_follows_the_heartbeats() -> None:
    assert worker_health({"a", "b"}, {"a", "b", "c"}) == "healthy"
    assert worker_health({"a", "b"}, {"a"}) == "starting"
    assert worker_health({"a"}, None) == "unhealthy"
