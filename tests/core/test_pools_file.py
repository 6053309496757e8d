"""The cluster file (``mimir-cluster.yaml``): pools, policies, and errors that name their line."""

from __future__ import annotations

from pathlib import Path

import pytest

from mimir.core.pools import (
    DEFAULT_POOL,
    ClusterFile,
    ClusterFileError,
    PoolSpec,
    default_cluster,
    load_cluster_file,
    parse_cluster_file,
    pool_for_queue,
    pools_from_env,
    pools_to_env,
    unserved_queues,
    wanted_replicas,
)

TWO_POOLS = """\
version: 1
autoscaler:
  period: 2
pools:
  default:
    min: 1
    max: 4
    autoscale:
      target_backlog: 10
  slow:
    queues: [slow, slower]
    concurrency: 2
    job_types: [pipeline]
    memory: 1g
    environment: {MIMIR_LOG_LEVEL: DEBUG}
    min: 0
    max: 2
    autoscale: {target_backlog: 5, target_age: 30, cooldown_down: 120}
"""


def _error(text: str) -> ClusterFileError:
    with pytest.raises(ClusterFileError) as caught:
        parse_cluster_file(text, "mimir-cluster.yaml")
    return caught.value


def test_two_pools_read_in_file_order_with_their_policies() -> None:
    cluster = parse_cluster_file(TWO_POOLS)
    assert list(cluster.pools) == ["default", "slow"]
    assert cluster.autoscaler.period == 2
    default, slow = cluster.pools["default"], cluster.pools["slow"]
    assert default.queues == ["default"] and default.autoscaled
    assert default.initial_replicas == 2  # default pool: 2 within min..max
    assert slow.queues == ["slow", "slower"] and slow.concurrency == 2
    assert slow.job_types == ["pipeline"] and slow.memory_bytes() == 1024**3
    assert slow.initial_replicas == 0  # other pools start at min
    assert slow.autoscale is not None and slow.autoscale.target_age == 30
    assert slow.autoscale.cooldown_down == 120 and slow.autoscale.cooldown_up == 15
    assert cluster.queues_by_pool() == {"default": ["default"], "slow": ["slow", "slower"]}
    assert pool_for_queue(cluster, "slower") == ["slow"] and pool_for_queue(cluster, "x") == []


def test_an_empty_file_and_no_file_are_the_default_pool() -> None:
    for cluster in (parse_cluster_file(""), default_cluster(), parse_cluster_file("version: 1")):
        assert list(cluster.pools) == [DEFAULT_POOL]
        pool = cluster.pools[DEFAULT_POOL]
        assert pool.queues == ["default"] and not pool.autoscaled
        assert pool.max is None and pool.max_replicas(64) == 64 and pool.initial_replicas == 2


def test_autoscale_shorthand_and_a_pool_without_body() -> None:
    cluster = parse_cluster_file("pools:\n  default: {autoscale: true}\n  gpu:\n")
    assert cluster.pools["default"].autoscale == cluster.pools["default"].autoscale.__class__()
    assert cluster.pools["gpu"].queues == ["gpu"] and cluster.pools["gpu"].autoscale is None
    off = parse_cluster_file("pools:\n  default: {autoscale: false}\n")
    assert not off.pools["default"].autoscaled


def test_errors_name_their_line_column_and_field() -> None:
    error = _error("pools:\n  default:\n    min: 3\n    max: 2\n")
    assert [(e.line, e.field) for e in error.errors] == [(4, "pools.default.max")]
    assert "max (2) is less than min (3)" in str(error) and "mimir-cluster.yaml" in str(error)

    error = _error("pools:\n  slow:\n    autoscale:\n      target_backlog: -1\n      step_upp: 2\n")
    found = {e.field: e for e in error.errors}
    assert found["pools.slow.autoscale.target_backlog"].line == 4
    typo = found["pools.slow.autoscale.step_upp"]
    assert typo.line == 5 and typo.suggestions == ["step_up"] and "did you mean" in typo.message

    error = _error("pools:\n  default: {}\n  Bad-Name: {}\n")
    assert error.errors[0].line == 3 and "invalid pool name 'Bad-Name'" in str(error)

    error = _error("version: 2\n")
    assert error.errors[0].field == "version" and error.errors[0].line == 1

    error = _error("pools:\n  a:\n    memory: lots\n    queues: [q, q]\n")
    assert {e.field for e in error.errors} <= {"pools.a.memory", "pools.a.queues"}

    error = _error("pools: [default]\n")
    assert error.errors[0].field == "pools" and error.errors[0].line == 1

    error = _error("pools:\n  default: {min: [\n")  # not YAML at all
    assert error.errors[0].line is not None and "invalid YAML" in str(error)

    error = _error("pools:\n  default:\n    replicas: 9\n    max: 4\n")
    assert error.errors[0].field == "pools.default.replicas" and error.errors[0].line == 3


def test_a_file_that_cannot_be_read_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ClusterFileError, match="cannot read it"):
        load_cluster_file(tmp_path / "missing.yaml")
    path = tmp_path / "mimir-cluster.yaml"
    path.write_text(TWO_POOLS)
    assert load_cluster_file(path) == parse_cluster_file(TWO_POOLS)


def test_the_server_reads_the_pools_it_was_given() -> None:
    cluster = parse_cluster_file(TWO_POOLS)
    assert pools_from_env({"MIMIR_POOLS": pools_to_env(cluster)}) == cluster
    assert pools_from_env({}) is None
    with pytest.raises(ClusterFileError, match="MIMIR_POOLS"):
        pools_from_env({"MIMIR_POOLS": '{"pools": {"x": {"min": -1}}}'})


def test_unserved_queues_and_wanted_replicas() -> None:
    assert unserved_queues({"default": ["default"], "slow": ["slow"]}, ["gpu", "slow", "a"]) == [
        "a",
        "gpu",
    ]
    assert [wanted_replicas(n, 10) for n in (0, 1, 10, 11, 300)] == [0, 1, 1, 2, 30]


def test_a_pool_name_from_the_model_is_checked_too() -> None:
    with pytest.raises(ValueError, match="invalid pool name"):
        PoolSpec(name="worker-2")
    with pytest.raises(ValueError):
        ClusterFile.model_validate({"pools": {"a": {"name": "b"}}})
