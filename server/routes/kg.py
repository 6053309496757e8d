"""The knowledge graph: SPARQL over every ontology, and a SPARQL 1.1 Protocol endpoint.

- ``POST /api/v1/kg/query`` ``{query, ontology?, limit?, timeout?}`` → SPARQL 1.1 JSON
  results (a CONSTRUCT/DESCRIBE as ``subject/predicate/object`` bindings) plus
  ``truncated`` and ``elapsed_ms``; read-only (an update is refused), held to a time limit
  (default 30 s, at most 300 s) and a row limit (default 10,000, at most 100,000);
- ``POST /api/v1/kg/update`` ``{update}`` runs a SPARQL 1.1 update;
- ``GET /api/v1/kg/subgraph?root_uri=&depth=&ontology=`` → ``{nodes, edges}`` for a view;
- ``GET|POST /api/v1/kg/sparql``: the SPARQL 1.1 Protocol (``query=``, ``update=``,
  ``default-graph-uri=``, ``named-graph-uri=``, ``using-graph-uri=``,
  ``using-named-graph-uri=``; ``application/sparql-query`` and ``application/sparql-update``
  bodies) with content negotiation — JSON, XML, CSV, TSV for rows and booleans; Turtle,
  N-Triples, RDF/XML, JSON-LD for graphs — so rdflib's ``SPARQLStore``, SPARQLWrapper or
  YASGUI use Mimir as they would use Fuseki. The whole result is streamed (no row
  limit), within the time limit; the endpoint's URL is the base IRI. Without a dataset
  the default graph is the union of the named graphs (:mod:`mimir.core.ontology.dataset`).

On every path ``SERVICE`` and ``LOAD`` are refused (403) before anything runs unless
``MIMIR_SPARQL_FEDERATION=allowlist`` lists their host in ``MIMIR_SPARQL_ALLOW``
(see :mod:`mimir.core.ontology.federation`; the store enforces it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated, Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from mimir.core.ontology import (
    DEFAULT_ROW_LIMIT,
    DEFAULT_TIMEOUT,
    RESULT_MEDIA_TYPES,
    QueryResult,
    SparqlError,
    Subgraph,
    resolve_format,
)
from mimir.core.ontology.dataset import Dataset, check_iri
from mimir.core.ontology.triplestores import NotAcceptableError
from mimir.server.errors import error_response
from mimir.server.knowledge import OntologyStoreDep

__all__ = ["QueryRequest", "UpdateRequest", "negotiate", "router"]

router = APIRouter(prefix="/api/v1/kg", tags=["knowledge graph"])

MAX_ROW_LIMIT = 100_000
MAX_TIMEOUT = 300.0


class QueryRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: SELECT, ASK, CONSTRUCT or DESCRIBE.
    query: str = Field(min_length=1)
    #: Query only this ontology's graph (``name@version`` or ``name``); default: all.
    ontology: str | None = None
    limit: int = Field(default=DEFAULT_ROW_LIMIT, ge=1, le=MAX_ROW_LIMIT)
    #: Seconds.
    timeout: float = Field(default=DEFAULT_TIMEOUT, gt=0, le=MAX_TIMEOUT)


class UpdateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    update: str = Field(min_length=1)
    timeout: float = Field(default=DEFAULT_TIMEOUT, gt=0, le=MAX_TIMEOUT)


def _base_iri(request: Request) -> str:
    """The route's URL: the base of the relative IRIs of a query or update sent to it."""
    return str(request.url.replace(query=None, fragment=None))


@router.post("/query")
async def kg_query(body: QueryRequest, request: Request, store: OntologyStoreDep) -> dict[str, Any]:
    """Run a read-only query; answers SPARQL JSON plus ``truncated`` and ``elapsed_ms``."""
    result = await store.run_query(
        body.query,
        ontology=body.ontology,
        row_limit=body.limit,
        timeout=body.timeout,
        base_iri=_base_iri(request),
    )
    answer = result.to_sparql_json()
    answer.update(
        kind=result.kind, truncated=result.truncated, elapsed_ms=round(result.elapsed_ms, 3)
    )
    return answer


@router.post("/update")
async def kg_update(
    body: UpdateRequest, request: Request, store: OntologyStoreDep
) -> dict[str, str]:
    """Run a SPARQL 1.1 update."""
    await store.run_update(body.update, timeout=body.timeout, base_iri=_base_iri(request))
    return {"status": "ok"}


@router.get("/subgraph", response_model=Subgraph)
async def kg_subgraph(
    store: OntologyStoreDep,
    root_uri: Annotated[str, Query(min_length=1)],
    depth: Annotated[int, Query(ge=0, le=5)] = 1,
    ontology: str | None = None,
    max_nodes: Annotated[int, Query(ge=1, le=5000)] = 500,
) -> Subgraph:
    """Nodes and edges within ``depth`` hops of ``root_uri``."""

    return await asyncio.to_thread(
        store.subgraph, root_uri, depth, ontology=ontology, max_nodes=max_nodes
    )


# -- SPARQL 1.1 Protocol ---------------------------------------------------------------

_ROW_TYPES = {
    "application/sparql-results+json": "json",
    "application/json": "json",
    "application/sparql-results+xml": "xml",
    "application/xml": "xml",
    "text/xml": "xml",
    "text/csv": "csv",
    "text/tab-separated-values": "tsv",
}
_GRAPH_TYPES = {
    "text/turtle": "turtle",
    "application/x-turtle": "turtle",
    "application/n-triples": "ntriples",
    "text/plain": "ntriples",
    "application/rdf+xml": "rdfxml",
    "application/xml": "rdfxml",
    "text/xml": "rdfxml",
    "application/ld+json": "jsonld",
    "application/json": "jsonld",
}
_FORMAT_PARAM = {
    "json": "json", "xml": "xml", "csv": "csv", "tsv": "tsv",
    "turtle": "turtle", "ttl": "turtle", "ntriples": "ntriples", "nt": "ntriples",
    "rdfxml": "rdfxml", "jsonld": "jsonld",
}  # fmt: skip


def _accepted(header: str) -> list[str]:
    """Media types of an Accept header, best first (stable for equal quality)."""
    ranked: list[tuple[float, int, str]] = []
    for index, part in enumerate(header.split(",")):
        fields = [f.strip() for f in part.split(";")]
        if not fields[0]:
            continue
        quality = 1.0
        for param in fields[1:]:
            if param.startswith("q="):
                try:
                    quality = float(param[2:])
                except ValueError:
                    quality = 0.0
        if quality > 0:
            ranked.append((-quality, index, fields[0].lower()))
    return [media for _, _, media in sorted(ranked)]


def negotiate(result: QueryResult, accept: str, fmt: str | None) -> str | None:
    """The format to answer ``result`` in, from ``format=`` or ``Accept``; ``None`` when
    nothing acceptable can be produced."""
    graph = result.kind == "graph"
    table = _GRAPH_TYPES if graph else _ROW_TYPES
    if fmt:
        chosen = _FORMAT_PARAM.get(fmt.lower()) or table.get(fmt.lower())
        if chosen and (chosen in RESULT_MEDIA_TYPES) != graph:
            return chosen
    media_types = _accepted(accept or "*/*")
    for media in media_types:
        if media in table:
            return table[media]
        if media in ("*/*", "application/*", "text/*"):
            return "turtle" if graph else "json"
    return None


_FORM = "application/x-www-form-urlencoded"


async def _protocol_params(request: Request) -> list[tuple[str, str]]:
    """The protocol's parameters from the query string and, for POST, the body: a form,
    or the query or update itself by its media type. A POST without Content-Type, of
    another media type or in a charset other than UTF-8 is refused (400)."""
    params = list(request.query_params.multi_items())
    if request.method == "POST":
        header = request.headers.get("content-type")
        if header is None or not header.strip():
            raise SparqlError(
                "a POST needs a Content-Type: application/x-www-form-urlencoded, "
                "application/sparql-query or application/sparql-update"
            )
        media, _, rest = header.partition(";")
        media = media.strip().lower()
        for param in rest.split(";"):
            key, _, value = param.partition("=")
            if key.strip().lower() == "charset" and value.strip().strip('"').lower() not in (
                "utf-8",
                "utf8",
            ):
                raise SparqlError(f"unsupported charset {value.strip()!r}: send UTF-8")
        raw = await request.body()
        try:
            body = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise SparqlError("the body is not valid UTF-8") from None
        if media == "application/sparql-query":
            params.append(("query", body))
        elif media == "application/sparql-update":
            params.append(("update", body))
        elif media == _FORM:
            params.extend(parse_qsl(body, keep_blank_values=True))
        else:
            raise SparqlError(
                f"unsupported content type {media!r}: use {_FORM}, "
                "application/sparql-query or application/sparql-update"
            )
    return params


def _graphs(params: list[tuple[str, str]], name: str) -> tuple[str, ...] | None:
    """The graphs of parameter ``name``, each an absolute IRI (400 otherwise: they go into
    the text of an update's ``USING``)."""
    found = tuple(v for k, v in params if k == name)
    for graph in found:
        check_iri(graph, name)
    return found or None


def _chooser(accept: str, fmt: str | None) -> Callable[[str], tuple[str, str] | None]:
    def choose(kind: str) -> tuple[str, str] | None:
        probe = QueryResult(kind=kind)  # type: ignore[arg-type]
        chosen = negotiate(probe, accept, fmt)
        if chosen is None:
            return None
        if kind == "graph":
            return chosen, resolve_format(chosen).media_type
        return chosen, RESULT_MEDIA_TYPES[chosen]

    return choose


@router.get("/sparql", operation_id="sparql_protocol_get")
@router.post("/sparql", operation_id="sparql_protocol_post")
async def sparql_protocol(request: Request, store: OntologyStoreDep) -> Response:
    """SPARQL 1.1 Protocol endpoint (query over GET/POST, update over POST). The whole
    result is streamed, within the time limit (``timeout=`` seconds, default 30, at most
    300); the endpoint's URL is the base IRI."""
    params = await _protocol_params(request)
    queries = [v for k, v in params if k == "query"]
    updates = [v for k, v in params if k == "update"]
    if len(queries) + len(updates) != 1:
        return error_response(
            400, "give exactly one 'query' (or, with POST, one 'update') parameter", None
        )
    timeouts = [v for k, v in params if k == "timeout"]
    timeout = DEFAULT_TIMEOUT
    if timeouts:
        try:
            timeout = float(timeouts[0])
        except ValueError:
            timeout = -1.0
        if not 0 < timeout <= MAX_TIMEOUT:
            return error_response(
                400, f"timeout must be a number of seconds in (0, {MAX_TIMEOUT:g}]", None
            )
    base_iri = _base_iri(request)
    if updates:
        if request.method != "POST":
            return error_response(405, "SPARQL updates must be sent with POST", None)
        if _graphs(params, "default-graph-uri") or _graphs(params, "named-graph-uri"):
            return error_response(
                400,
                "default-graph-uri/named-graph-uri are for queries; an update takes "
                "using-graph-uri/using-named-graph-uri",
                None,
            )
        using = Dataset(
            _graphs(params, "using-graph-uri"), _graphs(params, "using-named-graph-uri")
        )
        await store.run_update(updates[0], timeout=timeout, using=using, base_iri=base_iri)
        return Response(status_code=204)
    if _graphs(params, "using-graph-uri") or _graphs(params, "using-named-graph-uri"):
        return error_response(
            400,
            "using-graph-uri/using-named-graph-uri are for updates; a query takes "
            "default-graph-uri/named-graph-uri",
            None,
        )
    dataset = Dataset(_graphs(params, "default-graph-uri"), _graphs(params, "named-graph-uri"))
    fmt = next((v for k, v in params if k in ("format", "output")), None)
    try:
        media, body = await store.stream_query(
            queries[0],
            choose=_chooser(request.headers.get("accept", ""), fmt),
            dataset=dataset,
            timeout=timeout,
            base_iri=base_iri,
        )
    except NotAcceptableError as exc:
        kinds = (
            "Turtle, N-Triples, RDF/XML or JSON-LD"
            if str(exc) == "graph"
            else "JSON, XML, CSV or TSV"
        )
        return error_response(
            406, f"cannot answer in any accepted type; this result comes as {kinds}", None
        )
    return StreamingResponse(body, media_type=media)
