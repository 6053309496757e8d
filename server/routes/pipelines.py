"""Pipelines: run one now, and keep YAML files in ``MIMIR_PIPELINES_DIR``.

- ``POST /api/v1/pipelines/execute`` runs a pipeline named by ``pipeline_file``,
  ``pipeline_name`` or given inline as ``pipeline``, seeded with ``context``, and
  answers with its result (200 even when a step failed: ``success`` says so);
- ``GET/POST /api/v1/pipelines``, ``GET/PUT/DELETE /api/v1/pipelines/{name}`` list,
  create, read, replace and delete the files (validated before anything is written);
- ``POST /api/v1/pipelines/validate`` checks YAML without saving it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field

from mimir.core.engine import PipelineResult, execute_pipeline
from mimir.core.errors import PipelineValidationError
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


class ValidateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: YAML text to check (or give ``pipeline`` as a mapping).
    yaml: str | None = None
    pipeline: dict[str, Any] | None = None


class ValidationReport(BaseModel):
    valid: bool
    errors: list[ValidationIssue]
    #: The validated pipeline, when valid.
    pipeline: dict[str, Any] | None = None


def _detail(stored: StoredPipeline) -> PipelineDetail:
    return PipelineDetail(
        name=stored.name,
        file=stored.file,
        yaml=stored.yaml,
        pipeline=stored.pipeline.model_dump(mode="json"),
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
def create_pipeline(body: PipelineCreate, store: StoreDep, registry: RegistryDep) -> PipelineDetail:
    """Store a new pipeline (409 when the name is taken, 422 when the YAML is invalid)."""
    name = body.name
    if name is None:
        name = store.name_for(load_pipeline_text(body.yaml, registry=registry))
    stored, _ = store.save(name, body.yaml, create=True)
    return _detail(stored)


@router.post("/validate")
def validate(body: ValidateRequest, registry: RegistryDep) -> ValidationReport:
    """Check a pipeline without saving it: ``{valid, errors: [{message, line, column, ...}]}``."""
    if (body.yaml is None) == (body.pipeline is None):
        raise PipelineValidationError(
            [ValidationIssue(message="give exactly one of 'yaml' (text) or 'pipeline' (mapping)")]
        )
    try:
        if body.yaml is not None:
            pipeline = load_pipeline_text(body.yaml, registry=registry)
        else:
            pipeline = load_pipeline(body.pipeline or {}, registry=registry)
    except PipelineValidationError as exc:
        return ValidationReport(valid=False, errors=exc.errors)
    return ValidationReport(valid=True, errors=[], pipeline=pipeline.model_dump(mode="json"))


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
            name=bare, file=file, yaml=text, pipeline=None, valid=False, errors=exc.errors
        )


@router.put("/{name}")
def put_pipeline(
    name: str, body: PipelineUpdate, store: StoreDep, response: Response
) -> PipelineDetail:
    """Create or replace ``name`` (201 when created); invalid YAML is refused, not written."""
    stored, created = store.save(name, body.yaml)
    if created:
        response.status_code = status.HTTP_201_CREATED
    return _detail(stored)


@router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT)
def delete_pipeline(name: str, store: StoreDep) -> Response:
    """Remove a stored pipeline's file."""
    store.delete(name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
