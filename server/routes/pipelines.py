"""Pipelines: run one now, and keep YAML files in ``MIMIR_PIPELINES_DIR``.

- ``POST /api/v1/pipelines/execute`` runs a pipeline named by ``pipeline_file``,
  ``pipeline_name`` or given inline as ``pipeline``, seeded with ``context``, and
  answers with its result (200 even when a step failed: ``success`` says so);
- ``GET/POST /api/v1/pipelines``, ``GET/PUT/DELETE /api/v1/pipelines/{name}`` list,
  create, read, replace and delete the files (validated before anything is written);
- ``POST /api/v1/pipelines/validate`` checks YAML without saving it.

Answers that validate a pipeline carry ``warnings`` (fields ignored, bare strings that stay
text …) and ``notes`` (what is read differently from how it is written: the original Go
platform's names, bare strings read as context keys) next to ``errors``; ``?strict=true``
makes unknown fields errors.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field, field_validator

from mimir.core.engine import PipelineResult, execute_pipeline
from mimir.core.errors import LimitExceededError, PipelineValidationError
from mimir.core.limits import check_depth, default_limits
from mimir.core.pipeline.issues import ValidationIssue
from mimir.core.pipeline.loader import load_pipeline
from mimir.core.pipeline.requests import PipelineRequest, resolve_pipeline_request
from mimir.core.pipeline.store import PIPELINE_NAME_PATTERN, StoredPipeline, load_pipeline_text
from mimir.server.cancellation import ClientDisconnected, run_while_connected
from mimir.server.deps import RegistryDep, SettingsDep, StoreDep

__all__ = [
    "ExecuteRequest",
    "PipelineCreate",
    "PipelineDetail",
    "PipelineUpdate",
    "ValidateRequest",
    "ValidationReport",
    "router",
]

router = APIRouter(prefix="/api/v1/pipelines", tags=["pipelines"])


class ExecuteRequest(PipelineRequest):
    """The seed's body: one of ``pipeline_file``, ``pipeline_name``, ``pipeline``; ``context``."""

    model_config = ConfigDict(extra="forbid")


class PipelineCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: The YAML text to store.
    yaml: str = Field(min_length=1)
    #: Name to store it under (default: derived from the ``name:`` in the YAML).
    name: str | None = Field(default=None, pattern=PIPELINE_NAME_PATTERN)


class PipelineUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    yaml: str = Field(min_length=1)


class PipelineDetail(BaseModel):
    #: The name used in URLs and by ``pipeline_name`` (the file name without extension).
    name: str
    file: str
    yaml: str
    #: The parsed pipeline; ``None`` when the file does not validate (see ``errors``).
    pipeline: dict[str, Any] | None
    valid: bool = True
    errors: list[ValidationIssue] = []
    #: Fields ignored, bare strings that stay text …: it runs, but have a look.
    warnings: list[ValidationIssue] = []
    #: What is read differently from how it is written (aliases, context keys).
    notes: list[ValidationIssue] = []


class ValidateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: YAML text to check (or give ``pipeline`` as a mapping).
    yaml: str | None = None
    pipeline: dict[str, Any] | None = None
    #: The context a run would get: bare strings naming its keys are reported as read.
    context: dict[str, Any] | None = None

    @field_validator("context")
    @classmethod
    def _bounded_depth(cls, value: Any, info: Any) -> Any:
        if isinstance(value, dict):
            try:
                check_depth(value, default_limits().max_depth, info.field_name)
            except LimitExceededError as exc:
                raise ValueError(str(exc)) from None
        return value


class ValidationReport(BaseModel):
    valid: bool
    errors: list[ValidationIssue]
    #: Fields ignored, bare strings that stay text …: it runs, but have a look.
    warnings: list[ValidationIssue] = []
    #: What is read differently from how it is written (aliases, context keys).
    notes: list[ValidationIssue] = []
    #: The validated pipeline, when valid.
    pipeline: dict[str, Any] | None = None


def _detail(stored: StoredPipeline) -> PipelineDetail:
    return PipelineDetail(
        name=stored.name,
        file=stored.file,
        yaml=stored.yaml,
        pipeline=stored.pipeline.model_dump(mode="json"),
        warnings=stored.pipeline.warnings,
        notes=stored.pipeline.notes,
    )


@router.post("/execute", response_model=PipelineResult)
async def execute(
    request: Request,
    body: ExecuteRequest,
    settings: SettingsDep,
    store: StoreDep,
    registry: RegistryDep,
) -> Response:
    """Run the pipeline now and answer with its result (a failed step is ``success: false``).

    The run is cancelled when the client disconnects, and after ``MIMIR_EXECUTE_TIMEOUT``
    seconds (504): long runs belong on the queue.
    """
    # Reading and parsing a file is blocking work: keep it off the event loop.
    pipeline = await asyncio.to_thread(
        resolve_pipeline_request, body, settings, store=store, registry=registry
    )
    work = execute_pipeline(pipeline, body.context, data_dir=settings.data_dir, registry=registry)
    try:
        result = await run_while_connected(
            request,
            work,
            timeout=settings.limits.execute_timeout,
            what=f"execute of pipeline {pipeline.name!r}",
        )
    except ClientDisconnected:
        # Nobody reads this answer; 499 is what access logs conventionally call it.
        return Response(status_code=499)
    return Response(result.model_dump_json(), media_type="application/json")


@router.get("")
def list_pipelines(store: StoreDep) -> dict[str, list[dict[str, object]]]:
    """Every pipeline file: ``{"pipelines": [{name, file, description, steps, valid, ...}]}``."""
    return {"pipelines": [summary.as_dict() for summary in store.list()]}


@router.post("", status_code=status.HTTP_201_CREATED)
def create_pipeline(
    body: PipelineCreate, store: StoreDep, registry: RegistryDep, strict: bool = False
) -> PipelineDetail:
    """Store a new pipeline (409 when the name is taken, 422 when the YAML is invalid;
    ``?strict=true``: unknown fields too)."""
    name = body.name
    if name is None:
        name = store.name_for(load_pipeline_text(body.yaml, registry=registry, strict=strict))
    stored, _ = store.save(name, body.yaml, create=True, strict=strict)
    return _detail(stored)


@router.post("/validate")
def validate(
    body: ValidateRequest, registry: RegistryDep, strict: bool = False
) -> ValidationReport:
    """Check a pipeline without saving it: ``{valid, errors: [{message, line, column, ...}],
    warnings, notes}`` (``?strict=true``: unknown fields are errors)."""
    if (body.yaml is None) == (body.pipeline is None):
        raise PipelineValidationError(
            [ValidationIssue(message="give exactly one of 'yaml' (text) or 'pipeline' (mapping)")]
        )
    keys = set(body.context) if body.context is not None else None
    try:
        if body.yaml is not None:
            pipeline = load_pipeline_text(
                body.yaml, registry=registry, strict=strict, context_keys=keys
            )
        else:
            pipeline = load_pipeline(
                body.pipeline or {}, registry=registry, strict=strict, context_keys=keys
            )
    except PipelineValidationError as exc:
        return ValidationReport(
            valid=False, errors=exc.errors, warnings=exc.warnings, notes=exc.notes
        )
    return ValidationReport(
        valid=True,
        errors=[],
        warnings=pipeline.warnings,
        notes=pipeline.notes,
        pipeline=pipeline.model_dump(mode="json"),
    )


@router.get("/{name}")
def get_pipeline(name: str, store: StoreDep) -> PipelineDetail:
    """One stored pipeline, by file name: its name, file, YAML text and parsed form.

    A file that does not validate is still returned (``valid: false`` and its
    ``errors``), so that an editor can load it and fix it.
    """
    try:
        return _detail(store.get(name, declared=False))
    except PipelineValidationError as exc:
        file, text = store.read_text(name)
        bare = store.check_name(name)
        return PipelineDetail(
            name=bare,
            file=file,
            yaml=text,
            pipeline=None,
            valid=False,
            errors=exc.errors,
            warnings=exc.warnings,
            notes=exc.notes,
        )


@router.put("/{name}")
def put_pipeline(
    name: str, body: PipelineUpdate, store: StoreDep, response: Response, strict: bool = False
) -> PipelineDetail:
    """Create or replace ``name`` (201 when created); invalid YAML is refused, not written
    (``?strict=true``: unknown fields too)."""
    stored, created = store.save(name, body.yaml, strict=strict)
    if created:
        response.status_code = status.HTTP_201_CREATED
    return _detail(stored)


@router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT)
def delete_pipeline(name: str, store: StoreDep) -> Response:
    """Remove a stored pipeline's file."""
    store.delete(name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
