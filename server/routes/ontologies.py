"""Ontologies: upload, list, read, delete, stats and export.

- ``GET /api/v1/ontologies`` → ``{"ontologies": [info…]}``;
- ``POST /api/v1/ontologies`` → ``201`` info: either JSON ``{name, version, format,
  content (or the original platform's ontology_data), description, replace, append}``
  (within ``MIMIR_MAX_BODY_BYTES``), or the document itself as the body (its media type,
  e.g. ``text/turtle``, gives the format) with ``?name=&version=&format=&replace=&append=``
  and ``base=`` (the base IRI of its relative IRIs; default the ontology's graph URI + ``/``):
  streamed into the store as it arrives, up to ``MIMIR_MAX_UPLOAD_BYTES`` (1 GiB), never
  held in memory. ``append`` adds the document's triples to an existing version. An
  empty document is valid: zero triples.
- ``GET /api/v1/ontologies/{id}`` (``name@version``, or ``name`` for its newest version),
  ``DELETE …/{id}``, ``GET …/{id}/stats``, ``GET …/{id}/export?format=turtle``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mimir.core.ontology import OntologyInfo, OntologyStats, resolve_format
from mimir.core.ontology.formats import FORMATS
from mimir.server.deps import SettingsDep
from mimir.server.errors import error_response
from mimir.server.knowledge import OntologyStoreDep

__all__ = ["OntologyCreate", "router"]

router = APIRouter(prefix="/api/v1/ontologies", tags=["ontologies"])

#: An absolute IRI (a scheme, then no spaces or characters IRIs exclude).
BASE_PATTERN = r'^[A-Za-z][A-Za-z0-9+.-]*:[^\s<>"{}|^`\\]*$'
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
    #: The document (an empty one is valid: zero triples).
    content: str | None = None
    #: The original platform's name for ``content``.
    ontology_data: str | None = None
    description: str = ""
    #: Replace an existing version instead of refusing (409).
    replace: bool = False
    #: Add the document's triples to the existing version ``name@version``.
    append: bool = False

    @model_validator(mode="after")
    def _one_document(self) -> OntologyCreate:
        if (self.content is None) == (self.ontology_data is None):
            raise ValueError("give the document as either 'content' or 'ontology_data'")
        if self.replace and self.append:
            raise ValueError("'replace' and 'append' exclude each other")
        return self


class OntologyList(BaseModel):
    ontologies: list[OntologyInfo]


@router.get("", response_model=OntologyList)
async def list_ontologies(store: OntologyStoreDep) -> OntologyList:
    """Every ontology version."""
    return OntologyList(ontologies=await asyncio.to_thread(store.list))


_DOCUMENT = {"schema": {"type": "string"}}
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
    settings: SettingsDep,
    name: Annotated[str | None, Query(pattern=NAME_PATTERN)] = None,
    version: Annotated[str, Query(pattern=NAME_PATTERN)] = "1",
    fmt: Annotated[
        str | None, Query(alias="format", min_length=1, json_schema_extra=_FORMAT_SCHEMA)
    ] = None,
    replace: bool = False,
    append: bool = False,
    description: str = "",
    base: Annotated[str | None, Query(pattern=BASE_PATTERN, max_length=2048)] = None,
) -> Any:
    """Upload a document as a new ontology version, or append to one (see the module doc)."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    limits = settings.limits
    declared = request.headers.get("content-length", "")
    if media == "application/json":
        if declared.isdigit() and int(declared) > limits.max_body_bytes:
            return _too_large(limits.max_body_bytes, "MIMIR_MAX_BODY_BYTES")
        raw = bytearray()
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > limits.max_body_bytes:
                return _too_large(limits.max_body_bytes, "MIMIR_MAX_BODY_BYTES")
        try:
            body = OntologyCreate.model_validate_json(bytes(raw))
        except ValidationError as exc:
            problems = [
                {"field": ".".join(str(p) for p in e["loc"]) or "body", "message": e["msg"]}
                for e in exc.errors()
            ]
            text = "; ".join(f"{p['field']}: {p['message']}" for p in problems)
            return error_response(422, f"invalid request: {text}", problems)
        content = body.content if body.content is not None else body.ontology_data or ""
        if body.append:
            return await asyncio.to_thread(
                store.upload_stream,
                body.name,
                _BytesReader(content.encode()),
                version=body.version,
                fmt=body.format,
                description=body.description,
                append=True,
            )
        return await asyncio.to_thread(
            store.upload,
            body.name,
            content,
            version=body.version,
            fmt=body.format,
            description=body.description,
            replace=body.replace,
        )
    if not name:
        return error_response(
            422, "query.name: required when the body is the document itself", None
        )
    if replace and append:
        return error_response(422, "query: 'replace' and 'append' exclude each other", None)
    if declared.isdigit() and int(declared) > limits.max_upload_bytes:
        return _too_large(limits.max_upload_bytes, "MIMIR_MAX_UPLOAD_BYTES")
    reader = _StreamReader(request.stream(), asyncio.get_running_loop(), limits.max_upload_bytes)
    try:
        return await asyncio.to_thread(
            store.upload_stream,
            name,
            reader,
            version=version,
            fmt=fmt or media or "turtle",
            description=description,
            replace=replace,
            append=append,
            base_iri=base,
        )
    except Exception:
        if reader.too_large:
            return _too_large(limits.max_upload_bytes, "MIMIR_MAX_UPLOAD_BYTES")
        raise


def _too_large(limit: int, variable: str) -> Response:
    return error_response(413, f"request body larger than {limit} bytes (limit {variable})", None)


class _BytesReader:
    def __init__(self, data: bytes) -> None:
        self._data, self._pos = data, 0

    def read(self, size: int = -1) -> bytes:
        end = len(self._data) if size < 0 else self._pos + size
        out = self._data[self._pos : end]
        self._pos += len(out)
        return out


class _StreamReader:
    """A blocking file-like over a request body, read from a worker thread: each read
    pulls the next chunk from the event loop (the body is never held whole)."""

    def __init__(
        self, stream: AsyncIterator[bytes], loop: asyncio.AbstractEventLoop, limit: int
    ) -> None:
        self._stream = stream
        self._loop = loop
        self._limit = limit
        self._buffer = b""
        self._done = False
        self.received = 0
        self.too_large = False

    async def _next(self) -> bytes | None:
        try:
            return await self._stream.__anext__()
        except StopAsyncIteration:
            return None

    def read(self, size: int = -1) -> bytes:
        while not self._done and (size < 0 or len(self._buffer) < size):
            chunk = asyncio.run_coroutine_threadsafe(self._next(), self._loop).result()
            if chunk is None:
                self._done = True
                break
            self.received += len(chunk)
            if self.received > self._limit:
                self.too_large = True
                raise OSError(f"the document is larger than {self._limit} bytes")
            self._buffer += chunk
        if size < 0:
            out, self._buffer = self._buffer, b""
        else:
            out, self._buffer = self._buffer[:size], self._buffer[size:]
        return out

    def readable(self) -> bool:
        return True


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
