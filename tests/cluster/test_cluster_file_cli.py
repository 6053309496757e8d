"""``mimir cluster`` and the cluster file: errors by line before anything starts, the
``scale`` forms, and the pools table of ``status``."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from mimir.app.cluster import cli
from mimir.app.cluster.base import ClusterError, ClusterStatus, ServiceStatus
from mimir.app.cluster.cli import main as cluster_main
from mimir.app.cluster.cli import pool_rows
from mimir.core.pools import parse_cluster_file

BAD_FILE = """\
version: 1
pools:
  slow:
    queues: [slow]
    min: 3
    max: 1
"""


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MIMIR_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    return tmp_path


def test_a_cluster_file_with_an_error_exits_1_naming_its_line_before_anything_starts(
    isolated: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = isolated / "mimir-cluster.yaml"
    path.write_text(BAD_FILE)
    created: list[str] = []
    monkeypatch.setattr(cli, "create_backend", lambda *a, **k: created.append("backend"))
    code = cluster_main(["up", "--file", str(path), "--backend", "local", "--project", "cf"])
    err = capsys.readouterr().err
    assert code == 1
    assert f"invalid cluster file ({path}): line 6, column 10" in err
    assert "max (1) is less than min (3)" in err
    assert created == [] and not (isolated / "state").exists()


def test_unknown_fields_and_missing_files_are_named(
    isolated: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = isolated / "mimir-cluster.yaml"
    path.write_text("pools:\n  default:\n    replicaz: 2\n")
    assert cluster_main(["up", "--file", str(path), "--backend", "local"]) == 1
    err = capsys.readouterr().err
    assert "line 3" in err and "unknown field 'replicaz' (did you mean replicas?)" in err
    assert cluster_main(["up", "--file", str(isolated / "nope.yaml"), "--backend", "local"]) == 1
    assert "cannot read it" in capsys.readouterr().err


def test_workers_needs_the_default_pool_of_the_file(
    isolated: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = isolated / "mimir-cluster.yaml"
    path.write_text("pools:\n  gpu: {}\n")
    assert cluster_main(["up", "--file", str(path), "--workers", "3", "--backend", "local"]) == 1
    assert "--workers sizes the pool 'default', which" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["3"], ("default", 3)),
        (["slow", "2"], ("slow", 2)),
        (["--pool", "slow", "2"], ("slow", 2)),
        (["slow", "2", "--pool", "slow"], ("slow", 2)),
    ],
)
def test_scale_takes_n_pool_n_or_pool_option(argv: list[str], expected: tuple[str, int]) -> None:
    args = cli._parser().parse_args(["scale", *argv])
    assert cli._scale_target(args) == expected


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["slow", "2", "--pool", "fast"], "two pools given"),
        (["slow"], "N must be a number"),
        (["a", "b", "3"], "scale takes N, or POOL N"),
    ],
)
def test_scale_refuses_what_it_cannot_read(argv: list[str], message: str) -> None:
    args: argparse.Namespace = cli._parser().parse_args(["scale", *argv])
    with pytest.raises(ClusterError, match=message):
        cli._scale_target(args)


def _status() -> ClusterStatus:
    return ClusterStatus(
        "local",
        "demo",
        [
            ServiceStatus("redis", "redis", "running"),
            ServiceStatus("backend", "server", "running"),
            ServiceStatus("worker", "worker", "running", replicas=2, pool="default", wanted=2),
            ServiceStatus("worker-slow", "worker", "running", replicas=1, pool="slow", wanted=3),
        ],
        "http://127.0.0.1:1",
    )


def test_the_pools_table_from_the_pools_endpoint() -> None:
    answer = {
        "pools": {
            "default": {"queued": 12, "oldest_age_s": 4.4, "jobs_per_sec": 1.5},
            "slow": {"queued": 0, "oldest_age_s": None, "jobs_per_sec": 0.0},
        }
    }
    assert pool_rows(_status(), pools_answer=answer) == [
        ("POOL", "REPLICAS", "QUEUED", "OLDEST", "JOBS/S"),
        ("default", "2/2", "12", "4s", "1.50"),
        ("slow", "3/1", "0", "-", "0.00"),
    ]


def test_the_pools_table_falls_back_to_the_queue_status() -> None:
    cluster = parse_cluster_file("pools:\n  default: {}\n  slow: {queues: [slow, slower]}\n")
    rows = pool_rows(_status(), cluster, queue_status={"by_queue": {"slow": 2, "slower": 5}})
    assert rows[1:] == [("default", "2/2", "0", "-", "-"), ("slow", "3/1", "7", "-", "-")]
    # No API at all: replicas only.
    assert pool_rows(_status())[2] == ("slow", "3/1", "-", "-", "-")
