"""Engine overhead per step: ``python -m benchmarks.engine [--runs 7] [--iterations 2000]``.

A pipeline of ``--steps`` (10) no-op ``Debug.echo`` steps runs ``--iterations`` times
in-process; the time per step is compared side by side, in the same run, with a baseline
that awaits the plugin's ``run`` directly (config already validated). The difference is
what the engine adds per step: config validation, templating (in the templated variant),
timing, the step record and the result model. Each figure is the median of ``--runs``
runs. Target: under 50 µs per step.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from mimir.core.engine import execute_pipeline
from mimir.core.pipeline import Pipeline, load_pipeline
from mimir.core.plugins.base import StepRuntime
from mimir.core.plugins.registry import default_registry

__all__ = ["main"]

#: Engine overhead per step we aim to stay under, in microseconds.
TARGET_US = 50.0


def _pipeline(steps: int, templated: bool) -> Pipeline:
    value: Any = "{{ input }}" if templated else "constant"
    return load_pipeline(
        {
            "name": "bench",
            "steps": [
                {
                    "name": f"step-{index}",
                    "plugin": "Debug.echo",
                    "config": {"value": value},
                    "output": f"out{index}",
                }
                for index in range(steps)
            ],
        }
    )


async def _per_step_us(
    once: Callable[[], Awaitable[Any]], iterations: int, steps: int, runs: int
) -> list[float]:
    """Microseconds per step for each of ``runs`` runs of ``iterations`` calls of ``once``."""
    for _ in range(max(1, iterations // 10)):  # warm up caches and the allocator
        await once()
    figures = []
    for _ in range(runs):
        started = time.perf_counter()
        for _ in range(iterations):
            await once()
        figures.append((time.perf_counter() - started) / (iterations * steps) * 1e6)
    return figures


async def measure(steps: int, iterations: int, runs: int) -> dict[str, list[float]]:
    """Per-step figures (µs) for the baseline and the engine, static and templated config."""
    registry = default_registry()
    plugin = registry.get("Debug.echo")
    config = plugin.config_model.model_validate({"value": "constant"})
    context = {"input": "test data"}
    with tempfile.TemporaryDirectory(prefix="mimir-bench-") as directory:
        data_dir = Path(directory)
        run_context = StepRuntime("step", context, data_dir)

        async def direct() -> None:
            for _ in range(steps):
                await plugin.run(config, run_context)

        static, templated = _pipeline(steps, False), _pipeline(steps, True)

        async def engine_static() -> None:
            result = await execute_pipeline(static, context, data_dir=data_dir, registry=registry)
            assert result.success, result.error

        async def engine_templated() -> None:
            result = await execute_pipeline(
                templated, context, data_dir=data_dir, registry=registry
            )
            assert result.success, result.error

        return {
            "direct plugin call (baseline)": await _per_step_us(direct, iterations, steps, runs),
            "engine, static config": await _per_step_us(engine_static, iterations, steps, runs),
            "engine, templated config": await _per_step_us(
                engine_templated, iterations, steps, runs
            ),
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.engine", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--steps", type=int, default=10, help="steps per pipeline (10)")
    parser.add_argument("--iterations", type=int, default=2000, help="pipelines per run (2000)")
    parser.add_argument("--runs", type=int, default=7, help="runs; the median is shown (7)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument(
        "--check", action="store_true", help=f"exit 1 when the overhead is over {TARGET_US:g} µs"
    )
    args = parser.parse_args(argv)
    if min(args.steps, args.iterations, args.runs) < 1:
        parser.error("--steps, --iterations and --runs must be at least 1")

    figures = asyncio.run(measure(args.steps, args.iterations, args.runs))
    medians = {name: statistics.median(values) for name, values in figures.items()}
    baseline = medians["direct plugin call (baseline)"]
    overhead = {
        name: value - baseline for name, value in medians.items() if name.startswith("engine")
    }
    worst = max(overhead.values())
    within = worst < TARGET_US
    if args.json:
        print(
            json.dumps(
                {
                    "steps": args.steps,
                    "iterations": args.iterations,
                    "runs": args.runs,
                    "median_us_per_step": medians,
                    "overhead_us_per_step": overhead,
                    "target_us": TARGET_US,
                    "within_target": within,
                },
                indent=2,
            )
        )
    else:
        print(
            f"Engine overhead: {args.steps}-step pipeline of no-op Debug.echo steps, "
            f"{args.iterations} pipelines per run, median of {args.runs} runs"
        )
        width = max(len(name) for name in medians)
        print(f"  {'variant':<{width}}  {'µs/step':>8}  {'min':>8}  {'overhead':>9}")
        for name, values in figures.items():
            extra = f"{overhead[name]:8.2f}" if name in overhead else f"{'—':>8}"
            print(f"  {name:<{width}}  {medians[name]:8.2f}  {min(values):8.2f}  {extra}")
        verdict = "within" if within else "ABOVE"
        print(
            f"  engine overhead per step: {worst:.1f} µs (worst variant) — {verdict} the "
            f"{TARGET_US:g} µs target"
        )
    return 1 if args.check and not within else 0


if __name__ == "__main__":
    sys.exit(main())
