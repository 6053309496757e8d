"""``python -m benchmarks.engine`` runs and reports its figures (their values are not judged)."""

from __future__ import annotations

import json

import pytest

from benchmarks import engine


def test_engine_benchmark_reports_each_variant_and_the_overhead(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert engine.main(["--iterations", "20", "--runs", "2", "--steps", "3", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["median_us_per_step"]) == {
        "direct plugin call (baseline)",
        "engine, static config",
        "engine, templated config",
    }
    assert set(report["overhead_us_per_step"]) == {
        "engine, static config",
        "engine, templated config",
    }
    assert report["target_us"] == 50.0 and report["steps"] == 3


def test_engine_benchmark_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert engine.main(["--iterations", "10", "--runs", "1"]) == 0
    out = capsys.readouterr().out
    assert "engine overhead per step:" in out and "direct plugin call (baseline)" in out
