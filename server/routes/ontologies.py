"""Ontologies: upload, list, read, delete, stats and export.

- ``GET /api/v1/ontologies`` → ``{"ontologies": [info…]}``;
- ``POST /api/v1/ontologies`` → ``201`` info: either JSON ``{name, version, format,
  content, description, replace}``, or the document itself as the body (its media type,
  e.g. ``text/turtle``, gives the format) with ``?name=&version=&format=&replace=``;
- ``GET /api/v1/ontologies/{id}`` (``name@version``, or ``name`` for its newest version),
  ``DELETE …/{id}``, ``GET …/{id}/stats``, ``GET …/{id}/export?format=turtle``.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mimir.core.ontology import OntologyInfo, OntologyStats, resolve_format
from mimir.core.ontology.formats import FORMATS
from mimir.server.errors import error_response
from mimir.server.knowledge import OntologyStoreDep

__all__ = ["OntologyCreate", "router"]

router = APIRouter(prefix="/api/v1/ontologies", tags=["ontologies"])

#: What the store accepts as an ontology name or version.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
#: Format names and media types, as documented (the store also takes a few aliases and
#: any letter case).
FORMAT_NAMES = [*FORMATS, *(info.media_type for info in FORMATS.values())]
_FORMAT_SCHEMA: dict[str, Any] = {"enum": FORMAT_NAMES}


class OntologyCreate(BaseModel):
    """An upload as JSON."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN)
    version: str = Field(default="1", pattern=NAME_PATTERN)
    #: ``turtle``, ``rdfxml``, ``ntriples`` or ``jsonld`` (or a media type).
    format: str = Field(default="turtle", json_schema_extra=_FORMAT_SCHEMA)
    content: str = Field(min_length=1)
    description: str = ""
    #: Replace an existing version instead of refusing (409).
    replace: bool = False


class OntologyList(BaseModel):
    ontologies: list[OntologyInfo]


@router.get("", response_model=OntologyList)
async def list_ontologies(store: OntologyStoreDep) -> OntologyList:
    """Every ontology version."""
    return OntologyList(ontologies=await asyncio.to_thread(store.list))


_DOCUMENT = {"schema": {"type": "string", "minLength": 1}}
#: A JSON-LD document is JSON (an object, or a list of them).
_JSON_DOCUMENT = {"schema": {"type": ["object", "array"]}}


def _documents() -> dict[str, Any]:
    return {
        info.media_type: _JSON_DOCUMENT if info.media_type.endswith("json") else _DOCUMENT
        for info in FORMATS.values()
    }


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=OntologyInfo,
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": "The ontology as JSON, or the RDF document itself with `?name=`.",
            "content": {
                "application/json": {"schema": OntologyCreate.model_json_schema()},
                **_documents(),
            },
        }
    },
)
async def upload_ontology(
    request: Request,
    store: OntologyStoreDep,
    name: Annotated[str | None, Query(pattern=NAME_PATTERN)] = None,
    version: Annotated[str, Query(pattern=NAME_PATTERN)] = "1",
    fmt: Annotated[
        str | None, Query(alias="format", min_length=1, json_schema_extra=_FORMAT_SCHEMA)
    ] = None,
    replace: bool = False,
    description: str = "",
) -> Any:
    """Upload a document as a new ontology version (see the module doc for the forms)."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    raw = await request.body()
    if media == "application/json":
        try:
            body = OntologyCreate.model_validate_json(raw)
        except ValidationError as exc:
            problems = [
                {"field": ".".join(str(p) for p in e["loc"]) or "body", "message": e["msg"]}
                for e in exc.errors()
            ]
            text = "; ".join(f"{p['field']}: {p['message']}" for p in problems)
            return error_response(422, f"invalid request: {text}", problems)
        args: dict[str, Any] = body.model_dump()
        content: bytes | str = args.pop("content")
        fmt = args.pop("format")
    else:
        if not name:
            return error_response(
                422, "query.name: required when the body is the document itself", None
            )
        if not raw:
            return error_response(422, "the body is empty: send the RDF document", None)
        args = {"name": name, "version": version, "description": description, "replace": replace}
        content, fmt = raw, fmt or media or "turtle"
    return await asyncio.to_thread(
        store.upload,
        args["name"],
        content,
        version=args["version"],
        fmt=fmt,
        description=args["description"],
        replace=args["replace"],
    )


@router.get("/{ontology_id}", response_model=OntologyInfo)
async def get_ontology(ontology_id: str, store: OntologyStoreDep) -> OntologyInfo:
    """One version (``name@version``, or ``name`` for the newest)."""
    return await asyncio.to_thread(store.get, ontology_id)


@router.delete("/{ontology_id}", response_model=OntologyInfo)
async def delete_ontology(ontology_id: str, store: OntologyStoreDep) -> OntologyInfo:
    """Drop a version's graph; answers what was deleted."""
    return await asyncio.to_thread(store.delete, ontology_id)


@router.get("/{ontology_id}/stats", response_model=OntologyStats)
async def ontology_stats(ontology_id: str, store: OntologyStoreDep) -> OntologyStats:
    """Triples, classes, properties and individuals of the live graph."""
    return await asyncio.to_thread(store.stats, ontology_id)


@router.get(
    "/{ontology_id}/export",
    response_class=Response,
    responses={
        200: {
            "description": "The document, as an attachment.",
            "content": _documents(),
        }
    },
)
async def export_ontology(
    ontology_id: str,
    store: OntologyStoreDep,
    fmt: Annotated[
        str, Query(alias="format", min_length=1, json_schema_extra=_FORMAT_SCHEMA)
    ] = "turtle",
) -> Response:
    """The graph as a document: ``turtle``, ``rdfxml``, ``ntriples`` or ``jsonld``."""
    body, media = await asyncio.to_thread(store.export, ontology_id, fmt)
    info = await asyncio.to_thread(store.get, ontology_id)

    extension = resolve_format(fmt).extension
    filename = f"{info.name}-{info.version}.{extension}"
    return Response(
        body,
        media_type=media,
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
