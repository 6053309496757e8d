"""The engine: result shape, step order and context, the failing step named, timeouts."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from mimir.core.capture import CUT_MARKER, RunCapture, current_capture, current_step
from mimir.core.engine import StepResult, execute_pipeline
from mimir.core.pipeline import load_pipeline
from mimir.core.plugins import PluginRegistry
from mimir.core.plugins.base import Plugin, PluginConfig, StepRuntime
from mimir.core.plugins.builtin import BUILTIN_PLUGINS
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


class _Peek(Plugin[PluginConfig]):
    """Logs from the step and from a thread, writes a file and records it, and answers
    the step the context names while it runs."""

    plugin_type = "Test"
    plugin_name = "peek"
    description = "test"

    async def run(self, config: PluginConfig, run: StepRuntime) -> Any:
        log = logging.getLogger("acme.peek")
        log.info("hello from %s", run.step_name)
        path = run.resolve_path("out/peek.txt", for_write=True)

        def write() -> str | None:
            log.warning("in a thread")
            path.write_text("peek")
            return current_step.get()

        in_thread = await asyncio.to_thread(write)
        run.record_artifact(path)
        return {"step": current_step.get(), "thread": in_thread}


def _registry() -> PluginRegistry:
    registry = PluginRegistry()
    for plugin_class in (*BUILTIN_PLUGINS, _Peek):
        registry.register(plugin_class)
    return registry


_STEPS = [
    {"name": "first", "plugin": "Test.peek", "config": {}, "output": "a"},
    {"name": "off", "plugin": "Debug.echo", "config": {"value": 1}, "enabled": False},
    {"name": "boom", "plugin": "Debug.fail", "config": {"message": "no luck"}},
]


def test_steps_carry_their_start_and_the_context_names_the_running_step(data_dir: Path) -> None:
    pipeline = load_pipeline({"name": "p", "steps": _STEPS}, registry=_registry())
    before = datetime.now(UTC)
    result = asyncio.run(execute_pipeline(pipeline, {}, data_dir=data_dir, registry=_registry()))
    first, off, boom = result.steps
    assert first.started_at is not None and before <= first.started_at <= boom.started_at
    assert first.started_at.tzinfo is not None
    assert off.started_at is None
    assert result.context["a"] == {"step": "first", "thread": "first"}
    assert current_step.get() is None
    # Outside a worker nothing is captured, and recording an artifact is a no-op.
    assert current_capture.get() is None
    StepRuntime("s", {}, data_dir).record_artifact(data_dir / "out" / "peek.txt")


def test_a_capture_gets_the_steps_the_engines_lines_and_the_artifacts(data_dir: Path) -> None:
    pipeline = load_pipeline({"name": "p", "steps": _STEPS}, registry=_registry())
    capture = RunCapture()

    class Route(logging.Handler):  # what the worker's handler does, in short
        def emit(self, record: logging.LogRecord) -> None:
            target = current_capture.get()
            if target is not None:
                target.line(record.levelname, record.getMessage(), t=record.created)

    async def scenario() -> None:
        current_capture.set(capture)
        await execute_pipeline(pipeline, {}, data_dir=data_dir, registry=_registry())

    handler = Route()
    logging.getLogger().addHandler(handler)
    loggers = [logging.getLogger(name) for name in ("acme", "mimir.core.engine")]
    levels = [log.level for log in loggers]
    for log in loggers:
        log.setLevel(logging.INFO)
    try:
        asyncio.run(scenario())
    finally:
        logging.getLogger().removeHandler(handler)
        for log, level in zip(loggers, levels, strict=True):
            log.setLevel(level)
    detail = capture.detail()
    assert [(s["index"], s["name"], s["status"]) for s in detail["steps"]] == [
        (0, "first", "succeeded"),
        (1, "off", "skipped"),
        (2, "boom", "failed"),
    ]
    assert detail["steps"][2]["error"] == "no luck" and detail["steps"][0]["started_at"]
    lines = [(line["step"], line["msg"]) for line in detail["logs"]]
    assert ("first", "hello from first") in lines and ("first", "in a thread") in lines
    assert ("first", "step 1/3 'first' (Test.peek) started") in lines
    assert any(step == "boom" and msg.startswith("step 3/3 'boom' (Debug.fail) failed after")
               for step, msg in lines)  # fmt: skip
    # The engine's logger's line on the run, outside any step.
    assert lines[-1][0] is None and lines[-1][1].startswith("pipeline 'p' failed after")
    (artifact,) = detail["artifacts"]
    assert artifact == {
        "name": "out/peek.txt",
        "size": 4,
        "content_type": "text/plain",
        "sha256": hashlib.sha256(b"peek").hexdigest(),
        "step": "first",
    }


def test_the_log_cap_cuts_with_a_marker() -> None:
    capture = RunCapture(log_cap=100)
    for i in range(20):
        capture.line("INFO", f"line {i:02d} ", step="s")  # 8 bytes each
    detail = capture.detail()
    assert detail["logs_truncated"] is True
    assert len(detail["logs"]) == 13
    assert detail["logs"][-1]["msg"] == CUT_MARKER and detail["logs"][-1]["level"] == "WARNING"
    assert sum(len(line["msg"]) for line in detail["logs"][:-1]) <= 100
