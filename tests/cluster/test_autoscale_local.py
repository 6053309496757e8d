"""The autoscaler end to end on the local backend: real redis-server, server and worker
processes; the server's autoscaler scales the pool through ``mimir cluster scale``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

import pytest

from mimir.app.cluster.local import LocalBackend
from mimir.core.pools import parse_cluster_file
from mimir.core.settings import Settings
from tests.cluster.conftest import ClusterAPI, cluster_env
from tests.helpers import free_port, wait_until

pytestmark = pytest.mark.slow

#: One evaluation a second; short cooldowns so that a test sees the way back down.
CLUSTER = """\
autoscaler:
  period: 1
pools:
  default:
    replicas: 1
    min: 1
    max: 4
    concurrency: 5
    autoscale:
      target_backlog: 10
      step_up: 4
      step_down: 4
      cooldown_up: 1
      cooldown_down: 4
"""


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBackend]:
    root = tmp_path_factory.mktemp("autoscale-local")
    cluster = LocalBackend(
        "autoscale",
        Settings.from_env(cluster_env(root, concurrency=None)),
        api_port=free_port(),
        grace=15,
        start_timeout=60,
    )
    asyncio.run(cluster.up(None, cluster=parse_cluster_file(CLUSTER)))
    try:
        yield cluster
    finally:
        asyncio.run(cluster.clean())


def _autoscaler(api: ClusterAPI) -> dict[str, Any]:
    response = api.client.get("/api/v1/autoscaler")
    assert response.status_code == 200, response.text
    return dict(response.json())


def _running(api: ClusterAPI, pool: str = "default") -> int:
    """Live, not draining workers of ``pool``, from their heartbeats."""
    return sum(1 for w in api.workers() if w.get("pool") == pool and not w.get("draining"))


def _decision_ids(api: ClusterAPI) -> set[str]:
    """The ids of the decisions recorded so far."""
    return {d["id"] for d in _autoscaler(api)["decisions"]}


def _decisions_since(api: ClusterAPI, known: set[str]) -> list[dict[str, Any]]:
    """Decisions not among ``known``, oldest first. (Not by time: a decision carries the
    time its evaluation began, which may come before the jobs it saw were enqueued.)"""
    made = [d for d in _autoscaler(api)["decisions"] if d["id"] not in known]
    return sorted(made, key=lambda d: d["time"])


def test_the_autoscaler_is_on_and_this_server_leads(api: ClusterAPI) -> None:
    state = _autoscaler(api)
    assert state["enabled"], state["reason"]
    assert state["period"] == 1
    wait_until(lambda: _autoscaler(api)["leader"] is not None, timeout=15)
    leader = _autoscaler(api)["leader"]
    assert leader["owner"] == state["server"]
    pool = state["pools"]["default"]
    assert (pool["min"], pool["max"], pool["policy"]["target_backlog"]) == (1, 4, 10)
    wait_until(lambda: _running(api) == 1, timeout=30)


def _burst(api: ClusterAPI, count: int, seconds: float) -> list[str]:
    """``count`` jobs enqueued at once (eight clients), as a burst arrives."""
    with ThreadPoolExecutor(max_workers=8) as pool:
        batches = pool.map(lambda _: api.enqueue(count // 8, seconds), range(8))
        return [job for batch in batches for job in batch]


def test_a_burst_scales_up_to_max_within_two_periods_and_every_job_runs_once(
    api: ClusterAPI,
) -> None:
    known = _decision_ids(api)
    ids = _burst(api, 304, seconds=0.2)
    end = time.time()
    # 300 jobs over a target of 10 per replica want 30; max is 4. The burst arrives over
    # a moment, so the first decision may see part of it: the pool is at max by the second.
    wait_until(
        lambda: any(d["to"] == 4 for d in _decisions_since(api, known)),
        timeout=30,
        message="no decision to 4",
    )
    ups = [d for d in _decisions_since(api, known) if d["to"] > d["from"]]
    assert ups[0]["from"] == 1 and ups[0]["pool"] == "default", ups
    at_max = next(d for d in ups if d["to"] == 4)
    assert ups.index(at_max) <= 1, ups
    made = datetime.fromisoformat(at_max["time"]).timestamp()
    # Two evaluation periods (1 s each) after the burst, with a second for a busy machine.
    assert made - end <= 2 * 1 + 1, (made - end, ups)
    seen = {0}

    def four_running() -> bool:
        seen.add(_running(api))
        return 4 in seen

    wait_until(four_running, timeout=60, interval=0.2, message="never 4 workers at once")
    records = api.wait_finished(ids, timeout=180)
    statuses = {r["status"] for r in records.values()}
    assert statuses == {"succeeded"} and len(records) == 304, statuses
    # Exactly once: each job was delivered once (a hand-back or a second delivery would
    # have counted another attempt).
    assert {r["attempts"] for r in records.values()} == {1}
    assert len({r["worker_id"] for r in records.values()}) >= 2  # the new workers took some


def test_after_the_queue_empties_the_pool_returns_to_min(api: ClusterAPI) -> None:
    wait_until(lambda: _running(api) == 1, timeout=90, interval=0.5, message="not back to 1")
    pool = _autoscaler(api)["pools"]["default"]
    assert pool["replicas"]["wanted"] == 1 and pool["last_error"] is None, pool
    decisions = _autoscaler(api)["decisions"]
    down = [d for d in decisions if d["to"] < d["from"]]
    assert down and down[0]["to"] == 1 and down[0]["outcome"] in (None, "ok"), down
    # GET /metrics counts the same decisions (all of them: fewer than the 50 shown), and
    # the pool wants what it runs.
    assert len(decisions) < 50
    text = api.client.get("/metrics").text
    for action, made in (("up", len(decisions) - len(down)), ("down", len(down))):
        line = f'mimir_autoscaler_decisions_total{{action="{action}",pool="default"}} {made:.1f}'
        assert line in text, (line, [x for x in text.splitlines() if "decisions" in x])
    assert 'mimir_pool_desired_workers{pool="default"} 1.0' in text


def test_with_min_zero_the_idle_pool_sleeps_and_a_job_wakes_it(api: ClusterAPI) -> None:
    response = api.client.put(
        "/api/v1/autoscaler/pools/default",
        json={"min": 0, "max": 4, "target_backlog": 10, "step_up": 4, "step_down": 4,
              "cooldown_up": 2, "cooldown_down": 4},
    )  # fmt: skip
    assert response.status_code == 200, response.text
    assert response.json()["min"] == 0
    # Scaled to 0 by the autoscaler (its command done) and no worker taking jobs: a
    # registry emptied by a late heartbeat alone would not be the pool asleep.
    wait_until(
        lambda: (
            any(d["to"] == 0 and d["outcome"] == "ok" for d in _autoscaler(api)["decisions"])
            and _running(api) == 0
        ),
        timeout=60,
        interval=0.5,
        message="never at 0",
    )
    assert api.client.get("/api/v1/pools").json()["pools"]["default"]["replicas"]["running"] == 0
    known = _decision_ids(api)
    [job] = api.enqueue(1, seconds=0.05)
    record = api.wait_finished([job], timeout=60)[job]
    assert record["status"] == "succeeded", record
    wake = [d for d in _decisions_since(api, known) if d["from"] == 0]
    assert wake and wake[0]["to"] >= 1, wake


def test_bad_policies_are_422_naming_the_field(api: ClusterAPI) -> None:
    cases = [
        ({"min": 3, "max": 2}, "max"),
        ({"target_backlog": -1}, "target_backlog"),
    ]
    for body, field in cases:
        response = api.client.put("/api/v1/autoscaler/pools/default", json=body)
        assert response.status_code == 422, response.text
        assert field in response.text, response.text
    response = api.client.put("/api/v1/autoscaler/pools/nosuch", json={"target_backlog": 5})
    assert response.status_code in (404, 422) and "nosuch" in response.text, response.text
