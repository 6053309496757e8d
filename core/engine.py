"""The execution engine: run a validated pipeline's steps in order.

The engine knows nothing of HTTP or Redis: the server runs pipelines with it directly
and workers run queued jobs with it. A failing step stops the run and the result names
it. Cancelling the task that runs :func:`execute_pipeline` cancels the running step and
propagates :class:`asyncio.CancelledError` to the caller.

A bare string in a config field that takes data (the original Go platform's ``input:
json_data``) is read as the context key it names when the context holds that key; when it
names a step's output that has not been produced, the step fails; otherwise it is text.
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

from mimir.core import telemetry
from mimir.core.capture import current_capture, current_step
from mimir.core.errors import MimirError, PluginConfigError, StepTimeoutError
from mimir.core.logtext import printable
from mimir.core.pipeline.models import Pipeline, Step
from mimir.core.pipeline.origin import AI_RESULT_ALIASES
from mimir.core.pipeline.templating import contains_template, render
from mimir.core.pipeline.values import Aliased, origin_view
from mimir.core.plugins.base import ContextView, StepRuntime, context_input_fields
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
    #: When the step began (aware UTC); none for a skipped step.
    started_at: datetime | None = None


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


def _read_context_keys(
    step: Step,
    config: dict[str, Any],
    fields: dict[str, ContextView],
    context: dict[str, Any],
    outputs: dict[str, tuple[int, Step]],
) -> dict[str, Any]:
    """``config`` with each bare string in a data field that names a context key replaced
    by that key's value (as the field reads it). Only strings written in the pipeline
    count: a template that renders to a key's name stays that text."""
    updated: dict[str, Any] | None = None
    for key, view in fields.items():
        written = step.config.get(key)
        if not isinstance(written, str) or not written or contains_template(written):
            continue
        if written in context:
            value = context[written]
            value = origin_view(value) if view == "origin" else value
        elif written in outputs:
            index, producer = outputs[written]
            why = "is disabled" if not producer.enabled else "has not run yet"
            raise PluginConfigError(
                f"config.{key}: {written!r} names the output of step {index + 1} "
                f"{producer.name!r}, which {why}"
            )
        else:
            continue  # names nothing: the text itself
        if updated is None:
            updated = dict(config)
        updated[key] = value
    return config if updated is None else updated


async def _run_step(
    step: Step,
    registry: PluginRegistry,
    context: dict[str, Any],
    data_dir: Path | None,
    outputs: dict[str, tuple[int, Step]],
) -> Any:
    plugin = registry.get(step.plugin)
    raw = render(step.config, context) if step.templated else step.config
    fields = context_input_fields(plugin.config_model)
    if fields:
        raw = _read_context_keys(step, raw, fields, context, outputs)
    try:
        config = plugin.config_model.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"config.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()
        )
        raise PluginConfigError(f"invalid config for {step.plugin}: {problems}") from None
    run = StepRuntime(step.name, context, data_dir)
    if step.timeout is None:
        result = await plugin.run(config, run)
    else:
        try:
            async with asyncio.timeout(step.timeout) as scope:
                result = await plugin.run(config, run)
        except TimeoutError:
            if scope.expired():
                raise StepTimeoutError(f"timed out after {step.timeout:g}s") from None
            raise
    if plugin.plugin_type == "AI" and type(result) is dict and "text" in result:
        # Templates may read a reply by the original platform's names too.
        result = Aliased(result, AI_RESULT_ALIASES)
    return result


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
    # Which step produces each output key (the first one that does).
    outputs: dict[str, tuple[int, Step]] = {}
    for position, candidate in enumerate(pipeline.steps):
        if candidate.output:
            outputs.setdefault(candidate.output, (position, candidate))
    # A worker's capture of this run (none outside a worker): the steps and the engine's
    # own lines go to it directly (not through logging: no worker log line per step).
    capture = current_capture.get()
    for index, step in enumerate(pipeline.steps):
        where = f"step {index + 1}/{total} {printable(step.name)!r} ({step.plugin})"
        if not step.enabled:
            result = StepResult(
                name=step.name, plugin=step.plugin, status=StepStatus.skipped, duration_ms=0.0
            )
            if capture is not None:
                capture.line("INFO", f"{where} skipped (disabled)", step=step.name)
        else:
            step_started = time.perf_counter()
            started_at = datetime.now(UTC)
            step_token = current_step.set(step.name)
            if capture is not None:
                capture.step_started(index, step.name, step.plugin, started_at)
                capture.line("INFO", f"{where} started", step=step.name)
            # A span per step (a no-op unless tracing is on): its HTTP calls are children.
            with telemetry.span(
                f"step {step.name}",
                attributes=lambda step=step, index=index: {  # type: ignore[misc]
                    "mimir.step.name": step.name,
                    "mimir.step.index": index + 1,
                    "mimir.plugin": step.plugin,
                    "mimir.pipeline": pipeline.name,
                },
            ) as step_span:
                try:
                    output = await _run_step(step, registry, ctx, data_dir, outputs)
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
                        started_at=started_at,
                    )
                    error = f"step {index + 1} {step.name!r} ({step.plugin}) failed: {message}"
                    if step_span.is_recording():
                        step_span.record_exception(exc)
                else:
                    if step.output:
                        ctx[step.output] = output
                    result = StepResult(
                        name=step.name,
                        plugin=step.plugin,
                        status=StepStatus.succeeded,
                        duration_ms=(time.perf_counter() - step_started) * 1000,
                        started_at=started_at,
                    )
                finally:
                    current_step.reset(step_token)
                telemetry.record_outcome(step_span, result.status.value, result.error)
            if capture is not None:
                if result.status is StepStatus.failed:
                    capture.line(
                        "ERROR",
                        f"{where} failed after {result.duration_ms:.1f} ms: "
                        f"{printable(result.error)}",
                        step=step.name,
                    )
                else:
                    capture.line(
                        "INFO", f"{where} succeeded in {result.duration_ms:.1f} ms", step=step.name
                    )
        if capture is not None:
            capture.step_ended(
                index,
                result.name,
                result.plugin,
                result.status.value,
                result.duration_ms,
                result.error,
                result.started_at,
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
