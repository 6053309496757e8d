"""The execution engine: run a validated pipeline's steps in order.

The engine knows nothing of HTTP or Redis: the server runs pipelines with it directly
and workers run queued jobs with it. A failing step stops the run and the result names
it. Cancelling the task that runs :func:`execute_pipeline` cancels the running step and
propagates :class:`asyncio.CancelledError` to the caller.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from mimir.core.errors import MimirError, PluginConfigError, StepTimeoutError
from mimir.core.logtext import printable
from mimir.core.pipeline.models import Pipeline, Step
from mimir.core.pipeline.templating import render
from mimir.core.plugins.base import RunContext
from mimir.core.plugins.registry import PluginRegistry, default_registry

__all__ = ["PipelineResult", "StepResult", "StepStatus", "execute_pipeline"]

logger = logging.getLogger(__name__)


class StepStatus(StrEnum):
    """What became of one step."""

    #: The step ran and returned a result.
    succeeded = "succeeded"
    #: The step raised, timed out or had an invalid config; the run stopped there.
    failed = "failed"
    #: The step is disabled (``enabled: false``) and did not run.
    skipped = "skipped"


class StepResult(BaseModel):
    """How one step went."""

    name: str
    plugin: str
    status: StepStatus
    duration_ms: float
    error: str | None = None


class PipelineResult(BaseModel):
    """How a run went; ``model_dump(mode="json")`` is the shape sent over the wire."""

    success: bool
    error: str | None = None
    pipeline: str = ""
    context: dict[str, Any]
    steps: list[StepResult]
    executed_at: datetime
    duration_ms: float


def _describe(exc: BaseException) -> str:
    # Our own errors read well as they are; anything else gets its type for context.
    return str(exc) if isinstance(exc, MimirError) else f"{type(exc).__name__}: {exc}"


async def _run_step(
    step: Step, registry: PluginRegistry, context: dict[str, Any], data_dir: Path | None
) -> Any:
    plugin = registry.get(step.plugin)
    raw = render(step.config, context) if step.templated else step.config
    try:
        config = plugin.config_model.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"config.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()
        )
        raise PluginConfigError(f"invalid config for {step.plugin}: {problems}") from None
    run = RunContext(step.name, context, data_dir)
    if step.timeout is None:
        return await plugin.run(config, run)
    try:
        async with asyncio.timeout(step.timeout) as scope:
            return await plugin.run(config, run)
    except TimeoutError:
        if scope.expired():
            raise StepTimeoutError(f"timed out after {step.timeout:g}s") from None
        raise


async def execute_pipeline(
    pipeline: Pipeline,
    context: dict[str, Any] | None = None,
    *,
    data_dir: Path | None = None,
    on_step: Callable[[int, int, StepResult], None] | None = None,
    registry: PluginRegistry | None = None,
) -> PipelineResult:
    """Run ``pipeline``'s steps in order, each step's result entering the context.

    ``context`` seeds the pipeline context (it is copied, not changed). ``data_dir`` is
    where file plugins read and write (default ``MIMIR_DATA_DIR``). ``on_step(i, n,
    step_result)`` is called after each step (``i`` counts from 0). A step failure ends
    the run with ``success=False``; task cancellation propagates.
    """
    registry = registry or default_registry()
    ctx: dict[str, Any] = dict(context or {})
    executed_at = datetime.now(UTC)
    started = time.perf_counter()
    results: list[StepResult] = []
    error: str | None = None
    total = len(pipeline.steps)
    for index, step in enumerate(pipeline.steps):
        if not step.enabled:
            result = StepResult(
                name=step.name, plugin=step.plugin, status=StepStatus.skipped, duration_ms=0.0
            )
        else:
            step_started = time.perf_counter()
            try:
                output = await _run_step(step, registry, ctx, data_dir)
            except Exception as exc:
                message = _describe(exc)
                if not isinstance(exc, MimirError):
                    logger.warning("step %r (%s) raised", step.name, step.plugin, exc_info=True)
                result = StepResult(
                    name=step.name,
                    plugin=step.plugin,
                    status=StepStatus.failed,
                    duration_ms=(time.perf_counter() - step_started) * 1000,
                    error=message,
                )
                error = f"step {index + 1} {step.name!r} ({step.plugin}) failed: {message}"
            else:
                if step.output:
                    ctx[step.output] = output
                result = StepResult(
                    name=step.name,
                    plugin=step.plugin,
                    status=StepStatus.succeeded,
                    duration_ms=(time.perf_counter() - step_started) * 1000,
                )
        results.append(result)
        if on_step is not None:
            try:
                on_step(index, total, result)
            except Exception:
                logger.exception("on_step callback failed (ignored)")
        if error is not None:
            break
    duration_ms = (time.perf_counter() - started) * 1000
    if error:
        logger.info(
            "pipeline %r failed after %.1f ms: %s", pipeline.name, duration_ms, printable(error)
        )
    else:
        logger.debug("pipeline %r succeeded in %.1f ms", pipeline.name, duration_ms)
    return PipelineResult(
        success=error is None,
        error=error,
        pipeline=pipeline.name,
        context=ctx,
        steps=results,
        executed_at=executed_at,
        duration_ms=duration_ms,
    )
