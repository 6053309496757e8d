"""The engine: result shape, step order and context, the failing step named, timeouts."""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from mimir.core.engine import StepResult, execute_pipeline
from mimir.core.pipeline import load_pipeline
from tests.core.plugin_harness import run_pipeline


def test_result_shape_is_the_platforms_plus_extensions(data_dir: Path) -> None:
    result = run_pipeline(
        [
            {
                "name": "a",
                "plugin": "Debug.echo",
                "config": {"value": "{{ input }}"},
                "output": "x",
            },
            {"name": "b", "plugin": "Debug.echo", "config": {"value": [1]}, "enabled": False},
            {"name": "c", "plugin": "Debug.echo", "config": {"value": "{{ x }}!"}, "output": "y"},
        ],
        data_dir,
        context={"input": "test data"},
    )
    payload = result.model_dump(mode="json")
    assert set(payload) == {
        "success",
        "error",
        "pipeline",
        "context",
        "steps",
        "executed_at",
        "duration_ms",
    }
    assert payload["success"] is True and payload["error"] is None
    assert payload["context"] == {"input": "test data", "x": "test data", "y": "test data!"}
    assert [(s["name"], s["plugin"], s["status"], s["error"]) for s in payload["steps"]] == [
        ("a", "Debug.echo", "succeeded", None),
        ("b", "Debug.echo", "skipped", None),
        ("c", "Debug.echo", "succeeded", None),
    ]
    assert all(s["duration_ms"] >= 0 for s in payload["steps"])
    assert payload["duration_ms"] >= sum(s["duration_ms"] for s in payload["steps"])
    assert datetime.fromisoformat(payload["executed_at"]).tzinfo is not None


def test_a_failing_step_stops_the_run_and_is_named(data_dir: Path) -> None:
    result = run_pipeline(
        [
            {"name": "ok", "plugin": "Debug.echo", "config": {"value": 1}, "output": "one"},
            {"name": "boom", "plugin": "Debug.fail", "config": {"message": "disk on fire"}},
            {"name": "never", "plugin": "Debug.echo", "config": {"value": 2}, "output": "two"},
        ],
        data_dir,
    )
    assert result.success is False
    assert result.error == "step 2 'boom' (Debug.fail) failed: disk on fire"
    assert [(s.name, s.status) for s in result.steps] == [("ok", "succeeded"), ("boom", "failed")]
    assert result.steps[1].error == "disk on fire"
    assert result.context == {"one": 1}


def test_a_step_that_runs_too_long_times_out(data_dir: Path) -> None:
    result = run_pipeline(
        [
            {"name": "slow", "plugin": "Debug.sleep", "config": {"seconds": 30}, "timeout": 0.1},
            {"name": "after", "plugin": "Debug.echo", "config": {"value": 1}},
        ],
        data_dir,
    )
    assert not result.success
    assert result.error == "step 1 'slow' (Debug.sleep) failed: timed out after 0.1s"
    assert len(result.steps) == 1


def test_a_step_within_its_timeout_succeeds(data_dir: Path) -> None:
    result = run_pipeline(
        [{"name": "quick", "plugin": "Debug.sleep", "config": {"seconds": 0}, "timeout": "5s"}],
        data_dir,
    )
    assert result.success, result.error


def test_a_config_that_becomes_invalid_after_templating_fails_its_step(data_dir: Path) -> None:
    result = run_pipeline(
        [{"name": "nap", "plugin": "Debug.sleep", "config": {"seconds": "{{ s }}"}}],
        data_dir,
        context={"s": "forever"},
    )
    assert not result.success
    assert result.error is not None
    assert "invalid config for Debug.sleep: config.seconds:" in result.error


def test_on_step_reports_progress_and_the_seed_context_is_not_changed(data_dir: Path) -> None:
    pipeline = load_pipeline(
        {
            "name": "p",
            "steps": [
                {"name": f"s{i}", "plugin": "Debug.echo", "config": {"value": i}, "output": f"o{i}"}
                for i in range(3)
            ],
        }
    )
    seen: list[tuple[int, int, str]] = []

    def on_step(index: int, total: int, step: StepResult) -> None:
        seen.append((index, total, step.name))

    seed: dict[str, Any] = {"k": "v"}
    result = asyncio.run(execute_pipeline(pipeline, seed, data_dir=data_dir, on_step=on_step))
    assert seen == [(0, 3, "s0"), (1, 3, "s1"), (2, 3, "s2")]
    assert seed == {"k": "v"}
    assert result.context == {"k": "v", "o0": 0, "o1": 1, "o2": 2}


def test_cancelling_the_run_cancels_the_running_step(data_dir: Path) -> None:
    pipeline = load_pipeline(
        {"name": "p", "steps": [{"name": "s", "plugin": "Debug.sleep", "config": {"seconds": 60}}]}
    )

    async def scenario() -> None:
        task = asyncio.create_task(execute_pipeline(pipeline, {}, data_dir=data_dir))
        await asyncio.sleep(0)  # let the step start
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(asyncio.wait_for(scenario(), timeout=10))
