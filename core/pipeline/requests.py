"""Which pipeline a request means: ``pipeline_file``, ``pipeline_name`` or inline ``pipeline``.

The synchronous execute call and the queue's enqueue call take the same body (the
seed's ``{"pipeline_file": "test_pipeline.yaml", "context": {...}}``), and resolve it
here, the same way::

    request = PipelineRequest.model_validate(body)
    pipeline = resolve_pipeline_request(request, settings, store=store)

- ``pipeline_file``: a YAML file inside ``MIMIR_PIPELINES_DIR`` (``.yaml`` optional;
  nothing outside that directory is ever read);
- ``pipeline_name``: a stored pipeline, by file name or by the ``name:`` it declares;
- ``pipeline``: the definition itself, as a mapping or as YAML text.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, Field, field_validator

from mimir.core.errors import LimitExceededError, MimirError
from mimir.core.limits import check_depth, default_limits
from mimir.core.pipeline.loader import load_pipeline
from mimir.core.pipeline.models import Pipeline
from mimir.core.pipeline.store import PipelineStore, load_pipeline_text
from mimir.core.plugins.registry import PluginRegistry
from mimir.core.settings import Settings

__all__ = ["InvalidPipelineRequestError", "PipelineRequest", "resolve_pipeline_request"]

_CHOICES = ("pipeline_file", "pipeline_name", "pipeline")


class InvalidPipelineRequestError(MimirError):
    """The request names no pipeline, or more than one way to find it."""


class PipelineRequest(BaseModel):
    """The part of an execute or enqueue body that says which pipeline, with which context."""

    #: A YAML file in the pipelines directory, e.g. ``"test_pipeline.yaml"``.
    pipeline_file: str | None = Field(default=None, min_length=1)
    #: A stored pipeline's name.
    pipeline_name: str | None = Field(default=None, min_length=1)
    #: The pipeline itself: a mapping, or YAML text.
    pipeline: dict[str, Any] | str | None = None
    #: Seeds the pipeline context (nested at most ``MIMIR_MAX_DEPTH`` levels).
    context: dict[str, Any] = Field(default_factory=dict)

    @field_validator("pipeline", "context")
    @classmethod
    def _bounded_depth(cls, value: Any, info: Any) -> Any:
        # Deeper input would exhaust recursion in templating and serialisation later,
        # after a file was written or a job was queued: refuse it here, as a 422.
        if isinstance(value, dict):
            try:
                check_depth(value, default_limits().max_depth, info.field_name)
            except LimitExceededError as exc:
                raise ValueError(str(exc)) from None
        return value


def resolve_pipeline_request(
    request: PipelineRequest | Mapping[str, Any],
    settings: Settings | None = None,
    *,
    store: PipelineStore | None = None,
    registry: PluginRegistry | None = None,
) -> Pipeline:
    """The validated pipeline a request names (file, stored name or inline definition).

    ``store`` defaults to one over ``settings.pipelines_dir``; pass a long-lived store to
    reuse its parse cache. Blocking (it may read a file): call it off the event loop.
    Raises :class:`InvalidPipelineRequestError` (none or several of the three given),
    :class:`PipelineNotFoundError`, :class:`PathEscapeError` or
    :class:`PipelineValidationError`.
    """
    if not isinstance(request, PipelineRequest):
        request = PipelineRequest.model_validate(dict(request))
    given = [choice for choice in _CHOICES if getattr(request, choice) is not None]
    if len(given) != 1:
        which = "none was" if not given else f"{' and '.join(given)} were"
        raise InvalidPipelineRequestError(
            f"give exactly one of pipeline_file, pipeline_name or pipeline; {which} given"
        )
    if request.pipeline is not None:
        if isinstance(request.pipeline, str):
            return load_pipeline_text(request.pipeline, source="pipeline", registry=registry)
        return load_pipeline(request.pipeline, registry=registry)
    if store is None:
        store = PipelineStore((settings or Settings.from_env()).pipelines_dir, registry)
    if request.pipeline_file is not None:
        path = store.resolve_file(request.pipeline_file)
        return store.load_file(path, label=request.pipeline_file)[1]
    assert request.pipeline_name is not None
    return store.get(request.pipeline_name).pipeline
