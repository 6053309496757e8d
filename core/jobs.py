"""Job handlers by job type, and the built-in ``pipeline`` handler.

A worker looks up the handler of each job's ``type`` here and awaits
``handler(payload, ctx)``; what it returns (JSON-serialisable) becomes the job's
``result``. Raising fails the attempt (retried while attempts remain);
:class:`JobFailedError` also carries a result to keep, and with ``retry=False`` fails the
job without another attempt. Other packages add types::

    from mimir.core.jobs import register_job_handler
    register_job_handler("digital_twin", run_simulation)

Delivery is at least once: a handler may run again for the same job (after a worker
died mid-job, or a retry), so its side effects should be idempotent.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mimir.core.errors import MimirError
from mimir.core.queue.models import JobSpec

if TYPE_CHECKING:
    from mimir.core.pipeline.models import Pipeline

__all__ = [
    "Attempt",
    "JobFailedError",
    "JobHandler",
    "UnknownJobTypeError",
    "get_job_handler",
    "job_types",
    "load_job_handlers",
    "pipeline_job",
    "register_job_handler",
]

logger = logging.getLogger(__name__)


@dataclass
class Attempt:
    """What a handler knows about the attempt it runs."""

    job_id: str
    attempt: int
    worker_id: str
    data_dir: Path | None = None
    #: ``report_progress(step, total, name)``: step ``step`` (from 1) of ``total`` is done.
    report_progress: Callable[[int, int, str | None], None] = field(
        default=lambda step, total, name: None
    )


#: ``async handler(payload, ctx) -> result``.
JobHandler = Callable[[dict[str, Any], Attempt], Awaitable[Any]]


class JobFailedError(MimirError):
    """A handler's way to fail an attempt while keeping a ``result`` (e.g. a pipeline
    run that stopped at a failing step). ``retry=False``: the failure is deterministic
    (another attempt would fail the same way), so the job fails now, attempts left or
    not."""

    def __init__(self, message: str, result: Any = None, *, retry: bool = True) -> None:
        super().__init__(message)
        self.result = result
        self.retry = retry


class UnknownJobTypeError(MimirError):
    """No handler is registered for the job's type."""


_HANDLERS: dict[str, JobHandler] = {}


def register_job_handler(job_type: str, handler: JobHandler, *, replace: bool = False) -> None:
    """Make ``handler`` run jobs of ``job_type``; a taken type is an error unless ``replace``."""
    if job_type in _HANDLERS and not replace and _HANDLERS[job_type] is not handler:
        raise ValueError(f"a handler for job type {job_type!r} is already registered")
    _HANDLERS[job_type] = handler


def get_job_handler(job_type: str) -> JobHandler:
    """The handler of ``job_type``, loading its ``mimir.jobs`` entry point (named after the
    type) on first use; :class:`UnknownJobTypeError` names the known types."""
    handler = _HANDLERS.get(job_type)
    if handler is None:
        _load_entry_point(job_type)
        handler = _HANDLERS.get(job_type)
    if handler is None:
        known = ", ".join(sorted({*_HANDLERS, *_entry_point_names()})) or "none"
        raise UnknownJobTypeError(f"no handler for job type {job_type!r} (known: {known})")
    return handler


def _entry_point_names() -> list[str]:
    from importlib.metadata import entry_points

    return [entry.name for entry in entry_points(group=ENTRY_POINT_GROUP)]


def _load_entry_point(job_type: str) -> None:
    from importlib.metadata import entry_points

    for entry in entry_points(group=ENTRY_POINT_GROUP, name=job_type):
        try:
            loaded = entry.load()
            if callable(loaded):
                loaded()
        except Exception:
            logger.exception("job handler entry point %r failed to load", entry.name)


#: Entry-point group through which installed packages register job handlers: each entry
#: point is named after its job type and names a module (importing it registers the
#: handler) or a callable that does.
ENTRY_POINT_GROUP = "mimir.jobs"


def load_job_handlers() -> list[str]:
    """Load every installed job handler now (workers load each on first use instead);
    answers the job types. A failing entry point is logged and skipped."""
    for name in _entry_point_names():
        if name not in _HANDLERS:
            _load_entry_point(name)
    return job_types()


def job_types() -> list[str]:
    """Registered job types."""
    return sorted(_HANDLERS)


def pipeline_job(
    pipeline: Pipeline, context: dict[str, Any] | None = None, **options: Any
) -> JobSpec:
    """A ``pipeline`` job for a validated ``pipeline`` (its definition travels in the
    job, so workers need no shared pipeline files) seeded with ``context``."""
    definition = pipeline.model_dump(mode="json", by_alias=True, exclude_none=True)
    return JobSpec(
        type="pipeline",
        payload={"pipeline": definition, "context": dict(context or {})},
        pipeline=pipeline.name,
        **options,
    )


# Parsed pipelines by definition: a queue often runs the same pipeline many times.
_PIPELINE_CACHE: OrderedDict[str, Pipeline] = OrderedDict()
_PIPELINE_CACHE_SIZE = 128


def _load_cached(definition: dict[str, Any]) -> Pipeline:
    from mimir.core.pipeline.loader import load_pipeline

    key = json.dumps(definition, sort_keys=True, separators=(",", ":"), default=str)
    pipeline = _PIPELINE_CACHE.get(key)
    if pipeline is None:
        pipeline = load_pipeline(definition)
        _PIPELINE_CACHE[key] = pipeline
        if len(_PIPELINE_CACHE) > _PIPELINE_CACHE_SIZE:
            _PIPELINE_CACHE.popitem(last=False)
    else:
        _PIPELINE_CACHE.move_to_end(key)
    return pipeline


async def run_pipeline_job(payload: dict[str, Any], ctx: Attempt) -> Any:
    """The ``pipeline`` handler: run ``payload["pipeline"]`` with ``payload["context"]``."""
    from mimir.core.engine import execute_pipeline

    definition = payload.get("pipeline")
    if not isinstance(definition, dict):
        raise JobFailedError("pipeline job without a pipeline definition in its payload")
    pipeline = _load_cached(definition)
    context = payload.get("context") or {}

    def on_step(index: int, total: int, step: Any) -> None:
        ctx.report_progress(index + 1, total, getattr(step, "name", None))

    result = await execute_pipeline(pipeline, context, data_dir=ctx.data_dir, on_step=on_step)
    dumped = result.model_dump(mode="json")
    if not result.success:
        raise JobFailedError(result.error or "pipeline failed", dumped)
    return dumped


register_job_handler("pipeline", run_pipeline_job)
