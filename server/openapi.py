"""The OpenAPI document, made to say what the server really answers.

FastAPI documents each route's success answer and, for a route with parameters or a
body, a 422 in its own ``HTTPValidationError`` shape, which this API never sends.
:func:`install_openapi` post-processes the generated document once, in one place:

- every error answer is documented in the shape :mod:`mimir.server.errors` produces,
  :class:`ErrorBody` (``{"error", "detail"}``), and for 422 :class:`ValidationErrorBody`,
  whose ``detail`` is one of the documented forms (a list of ``{field, message}``, the
  ``issues`` of a pipeline, an unknown plugin with suggestions, a position in an RDF
  document, or ``null``);
- statuses that follow from how a route is built are added to every such route: 401
  when the server requires a token (and the bearer scheme is declared), 400 (malformed
  JSON) and 413 (body too large) for a JSON body, 422 for parameters or a body, 503 for
  a route that needs Redis or the ontology store;
- everything else comes from :data:`ROUTES`, one entry per operation: the error
  statuses its handler can answer, its success statuses when it has several, and the
  constraints on its parameters that the handler checks itself (so that a generated
  client, or a fuzzer, knows which values are valid).

A test checks that every operation has an entry, so a new route must say what it answers.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import models_json_schema

from mimir.core.pipeline.issues import ValidationIssue
from mimir.core.pipeline.store import PIPELINE_NAME_PATTERN
from mimir.core.pools import POOL_NAME_PATTERN
from mimir.server.auth import OPEN_PATHS
from mimir.server.deps import get_redis
from mimir.server.knowledge import get_ontology_store
from mimir.server.methods import flat_routes
from mimir.server.roles import required_role
from mimir.server.routes.twins import KINDS_PATTERN, METRICS_PATTERN, RUNS_PATTERN

__all__ = ["ROUTES", "ErrorBody", "OperationDoc", "ValidationErrorBody", "install_openapi"]


class ErrorBody(BaseModel):
    """Every error answer (the 422 one is :class:`ValidationErrorBody`)."""

    model_config = ConfigDict(title="ErrorBody")

    #: What went wrong, for a person.
    error: str = Field(description="What went wrong, for a person.")
    detail: Any = Field(
        description="More about the error, or null: for malformed JSON `{position}`, "
        "the character where parsing stopped."
    )


class FieldProblem(BaseModel):
    """One invalid part of a request."""

    #: ``context``, ``steps.0.name``, ``query.timeout`` …
    field: str
    message: str


class PipelineIssues(BaseModel):
    """The problems of a pipeline that does not validate."""

    issues: list[ValidationIssue]


class UnknownPlugin(BaseModel):
    """A step names a plugin that is not registered."""

    plugin: str
    suggestions: list[str]


class DocumentPosition(BaseModel):
    """Where an RDF document stopped parsing (1-based), when known."""

    line: int | None
    column: int | None


class ValidationErrorBody(BaseModel):
    """A 422 answer: the request, or the pipeline or document it carries, is invalid."""

    model_config = ConfigDict(title="ValidationErrorBody")

    error: str = Field(description="What is invalid, for a person.")
    detail: list[FieldProblem] | PipelineIssues | UnknownPlugin | DocumentPosition | None


#: Description of each error status, as the API uses it.
DESCRIPTIONS: dict[int, str] = {
    400: "Bad request: malformed JSON (`detail.position`), an invalid name or path, or a "
    "query the server cannot run (the message says which).",
    401: "Missing or wrong bearer token: send `Authorization: Bearer <MIMIR_API_TOKEN>`.",
    403: "Refused by policy: a SPARQL `SERVICE` or `LOAD` while federation is off "
    "(`MIMIR_SPARQL_FEDERATION`), or to a host it does not allow.",
    404: "No such resource (the message names it).",
    405: "Method not allowed for this request.",
    406: "None of the media types in `Accept` can carry this result.",
    409: "Conflict with the resource's current state (the name is taken, or the job is "
    "not in a state that allows this).",
    413: "The request body is larger than the server accepts.",
    415: "The media type or format of the document is not supported.",
    422: "Invalid request: the body, a parameter, or the pipeline or document it carries.",
    503: "A backing service (Redis, or the external SPARQL store) is unavailable, or the "
    "queue is full: Redis reached its memory limit and refused the write (the error "
    'starts "queue full: ", nothing was written, `Retry-After: 5`; retry later).',
    504: "The work ran past its time limit and was stopped.",
}

_JSON = "application/json"


@dataclass(frozen=True)
class OperationDoc:
    """What one operation answers beyond what its route declaration tells FastAPI."""

    #: Error statuses the handler can answer (added to the inferred ones).
    errors: tuple[int, ...] = ()
    #: Inferred statuses the handler never answers (it catches that error itself).
    never: tuple[int, ...] = ()
    #: Success statuses, when the operation has several (each with the success schema).
    success: tuple[int, ...] = ()
    #: Extra JSON-schema keywords for parameters, by parameter name.
    parameters: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: OpenAPI operation fields merged in as they are (for routes that read the request
    #: themselves, such as the SPARQL protocol).
    extra: dict[str, Any] = field(default_factory=dict)
    #: Links from the success answers to the operations that use what they return: link
    #: name -> ("METHOD /path", {"path.<param>": "$response.body#/<field>"}).
    links: dict[str, tuple[str, dict[str, str]]] = field(default_factory=dict)


_NAME = {"pattern": PIPELINE_NAME_PATTERN}


def _links(
    noun: str, operations: dict[str, str], /, **parameters: str
) -> dict[str, tuple[str, dict[str, str]]]:
    """Links named ``<Verb><noun>`` to each of ``operations`` (verb -> "METHOD /path"),
    passing each path parameter from a field of the answer (``parameter="field"``)."""
    return {
        f"{verb}{noun}": (
            target,
            {f"path.{k}": f"$response.body#/{v}" for k, v in parameters.items()},
        )
        for verb, target in operations.items()
    }


_PIPELINE = "/api/v1/pipelines/{name}"
_JOB = "/api/v1/queue/jobs/{job_id}"
_ONTOLOGY = "/api/v1/ontologies/{ontology_id}"
_TWIN = "/api/v1/twins/{twin_id}"
_JOB_LINKS = _links(
    "Job",
    {"Get": f"GET {_JOB}", "WaitFor": f"GET {_JOB}/wait", "Cancel": f"POST {_JOB}/cancel"},
    job_id="job_id",
)
_SPARQL_RESULTS = {
    "application/sparql-results+json": {"schema": {"type": "object"}},
    "application/ld+json": {"schema": {"type": ["object", "array"]}},
} | {
    media: {"schema": {"type": "string"}}
    for media in (
        "application/sparql-results+xml",
        "text/csv",
        "text/tab-separated-values",
        "text/turtle",
        "application/n-triples",
        "application/rdf+xml",
    )
}
_SPARQL_PARAMETERS = [
    {
        "name": "default-graph-uri",
        "in": "query",
        "required": False,
        "schema": {"type": "array", "items": {"type": "string"}},
        "description": "Graphs that form the default graph of the query (given alone: "
        "no named graphs). Without any, the default graph is the union of the named graphs.",
    },
    *(
        {
            "name": name,
            "in": "query",
            "required": False,
            "schema": {"type": "array", "items": {"type": "string"}},
            "description": text,
        }
        for name, text in (
            ("named-graph-uri", "The named graphs of the query (given alone: empty default)."),
            ("using-graph-uri", "An update's USING graphs (400 with USING or WITH in it)."),
            ("using-named-graph-uri", "An update's USING NAMED graphs."),
        )
    ),
    {
        "name": "timeout",
        "in": "query",
        "required": False,
        "schema": {"type": "number", "exclusiveMinimum": 0, "maximum": 300},
        "description": "Seconds the whole answer may take (default 30).",
    },
    {
        "name": "format",
        "in": "query",
        "required": False,
        "schema": {
            "type": "string",
            "enum": [
                *("json", "xml", "csv", "tsv"),
                *("turtle", "ttl", "ntriples", "nt", "rdfxml", "jsonld"),
            ],
        },
        "description": "Result format, instead of content negotiation through `Accept`.",
    },
]
_SPARQL_ANSWERS = {
    "200": {
        "description": "The result: rows or a boolean (SPARQL results JSON, XML, CSV, TSV), "
        "or a graph (Turtle, N-Triples, RDF/XML, JSON-LD), as `Accept` or `format` asks: "
        "the whole result, streamed (an answer cut off by the time limit ends early).",
        "content": _SPARQL_RESULTS,
    }
}

#: Every operation's own answers, by ``"METHOD /path"`` as in the document.
ROUTES: dict[str, OperationDoc] = {
    "GET /health": OperationDoc(never=(503,)),  # says "redis": "unavailable" instead
    "GET /ready": OperationDoc(),  # 503 while Redis is away
    "GET /metrics": OperationDoc(),
    "GET /api/v1/events": OperationDoc(never=(503,)),  # an `error` event instead
    "GET /api/v1/plugins": OperationDoc(),
    "GET /api/v1/workers": OperationDoc(),
    "POST /api/v1/workers/{worker_id}/drain": OperationDoc(errors=(404,)),
    "POST /api/v1/workers/{worker_id}/stop": OperationDoc(errors=(404,)),
    "GET /api/v1/diagnostics": OperationDoc(),
    # -- pipelines
    "POST /api/v1/pipelines/execute": OperationDoc(errors=(400, 404, 422, 504)),
    "GET /api/v1/pipelines": OperationDoc(),
    "POST /api/v1/pipelines": OperationDoc(
        errors=(400, 409, 422),
        links=_links(
            "Pipeline",
            {
                "Get": f"GET {_PIPELINE}",
                "Replace": f"PUT {_PIPELINE}",
                "Delete": f"DELETE {_PIPELINE}",
            },
            name="name",
        ),
    ),
    "POST /api/v1/pipelines/validate": OperationDoc(errors=(422,)),
    "GET /api/v1/pipelines/{name}": OperationDoc(errors=(400, 404), parameters={"name": _NAME}),
    "PUT /api/v1/pipelines/{name}": OperationDoc(
        errors=(400, 422), success=(200, 201), parameters={"name": _NAME}
    ),
    "DELETE /api/v1/pipelines/{name}": OperationDoc(errors=(400, 404), parameters={"name": _NAME}),
    # -- queue
    "POST /api/v1/queue/pipelines/enqueue": OperationDoc(errors=(400, 404, 422), links=_JOB_LINKS),
    "GET /api/v1/queue/status": OperationDoc(),
    "GET /api/v1/queue/jobs": OperationDoc(),
    "GET /api/v1/queue/jobs/{job_id}": OperationDoc(errors=(404,)),
    "GET /api/v1/queue/jobs/{job_id}/wait": OperationDoc(errors=(404,)),
    "POST /api/v1/queue/jobs/{job_id}/cancel": OperationDoc(errors=(404, 409)),
    "GET /api/v1/queue/dead-letter": OperationDoc(),
    "POST /api/v1/queue/dead-letter/{job_id}/retry": OperationDoc(errors=(404, 409)),
    "DELETE /api/v1/queue/dead-letter/{job_id}": OperationDoc(errors=(404, 409)),
    # -- pools and the autoscaler
    "GET /api/v1/autoscaler": OperationDoc(),
    "PUT /api/v1/autoscaler/pools/{pool}": OperationDoc(
        errors=(404, 422), parameters={"pool": {"pattern": f"^{POOL_NAME_PATTERN}$"}}
    ),
    "GET /api/v1/pools": OperationDoc(),
    # -- ontologies
    "GET /api/v1/ontologies": OperationDoc(),
    "POST /api/v1/ontologies": OperationDoc(
        errors=(400, 404, 409, 413, 415, 422),
        links=_links(
            "Ontology",
            {
                "Get": f"GET {_ONTOLOGY}",
                "StatsOf": f"GET {_ONTOLOGY}/stats",
                "Export": f"GET {_ONTOLOGY}/export",
                "Delete": f"DELETE {_ONTOLOGY}",
            },
            ontology_id="id",
        ),
    ),
    "GET /api/v1/ontologies/{ontology_id}": OperationDoc(errors=(404,)),
    "DELETE /api/v1/ontologies/{ontology_id}": OperationDoc(errors=(404,)),
    "GET /api/v1/ontologies/{ontology_id}/stats": OperationDoc(errors=(404,)),
    "GET /api/v1/ontologies/{ontology_id}/export": OperationDoc(errors=(404, 415)),
    # -- knowledge graph
    "POST /api/v1/kg/query": OperationDoc(errors=(400, 403, 404, 504)),
    "POST /api/v1/kg/update": OperationDoc(errors=(400, 403, 504)),
    "GET /api/v1/kg/subgraph": OperationDoc(errors=(400, 404)),
    "GET /api/v1/kg/sparql": OperationDoc(
        errors=(400, 403, 405, 406, 504),
        extra={
            "parameters": [
                {
                    "name": "query",
                    "in": "query",
                    "required": True,
                    "schema": {"type": "string", "minLength": 1},
                    "description": "A SPARQL 1.1 query (updates need POST).",
                },
                *_SPARQL_PARAMETERS,
            ],
            "responses": _SPARQL_ANSWERS,
        },
    ),
    "POST /api/v1/kg/sparql": OperationDoc(
        errors=(400, 403, 406, 413, 504),
        extra={
            "parameters": _SPARQL_PARAMETERS,
            "requestBody": {
                "required": True,
                "content": {
                    "application/x-www-form-urlencoded": {
                        "schema": {
                            "type": "object",
                            "properties": {
                                "query": {"type": "string", "minLength": 1},
                                "update": {"type": "string", "minLength": 1},
                                "default-graph-uri": {"type": "string"},
                            },
                            "oneOf": [{"required": ["query"]}, {"required": ["update"]}],
                        }
                    },
                    "application/sparql-query": {"schema": {"type": "string", "minLength": 1}},
                    "application/sparql-update": {"schema": {"type": "string", "minLength": 1}},
                },
            },
            "responses": {
                **_SPARQL_ANSWERS,
                "204": {"description": "The update ran."},
            },
        },
    ),
    # -- digital twins
    "GET /api/v1/twins": OperationDoc(),
    "POST /api/v1/twins": OperationDoc(
        errors=(404, 409, 422),
        links=_links(
            "Twin",
            {
                "Get": f"GET {_TWIN}",
                "ScenariosOf": f"GET {_TWIN}/scenarios",
                "AddScenarioTo": f"POST {_TWIN}/scenarios",
                "RunsOf": f"GET {_TWIN}/runs",
                "Sync": f"POST {_TWIN}/sync",
                "Delete": f"DELETE {_TWIN}",
            },
            twin_id="id",
        ),
    ),
    "GET /api/v1/twins/{twin_id}": OperationDoc(errors=(404,)),
    "DELETE /api/v1/twins/{twin_id}": OperationDoc(errors=(404,)),
    "GET /api/v1/twins/{twin_id}/scenarios": OperationDoc(errors=(404,)),
    "POST /api/v1/twins/{twin_id}/scenarios": OperationDoc(
        errors=(404, 409, 422),
        links=_links(
            "Scenario",
            {"Get": f"GET {_TWIN}/scenarios/{{scenario_id}}"},
            twin_id="twin_id",
            scenario_id="id",
        ),
    ),
    "GET /api/v1/twins/{twin_id}/scenarios/{scenario_id}": OperationDoc(errors=(404,)),
    "POST /api/v1/twins/{twin_id}/runs": OperationDoc(
        errors=(404, 422),
        success=(201, 202),
        links=_links(
            "Run",
            {"Get": f"GET {_TWIN}/runs/{{run_id}}"},
            twin_id="twin_id",
            run_id="id",
        ),
    ),
    "GET /api/v1/twins/{twin_id}/runs": OperationDoc(errors=(404,)),
    # A run whose job cannot be read is answered as last stored, never with a 503.
    "GET /api/v1/twins/{twin_id}/runs/{run_id}": OperationDoc(errors=(404,), never=(503,)),
    # 409: the run has no result (yet); 422: an unknown metric or kind, start after end.
    "GET /api/v1/twins/{twin_id}/runs/{run_id}/series": OperationDoc(
        errors=(404, 409), never=(503,), parameters={"metrics": {"pattern": METRICS_PATTERN}}
    ),
    "GET /api/v1/twins/{twin_id}/runs/{run_id}/timeline": OperationDoc(
        errors=(404, 409), never=(503,), parameters={"kind": {"pattern": KINDS_PATTERN}}
    ),
    "GET /api/v1/twins/{twin_id}/compare": OperationDoc(
        errors=(404, 409), never=(503,), parameters={"runs": {"pattern": RUNS_PATTERN}}
    ),
    # 422: the twin has no ontology, or the ontology no individuals.
    "POST /api/v1/twins/{twin_id}/sync": OperationDoc(errors=(404, 422)),
    "POST /api/v1/twins/{twin_id}/whatif": OperationDoc(
        errors=(404, 422),
        links=_links(
            "WhatIf",
            {"Get": f"GET {_TWIN}/whatif/{{batch_id}}"},
            twin_id="twin_id",
            batch_id="batch_id",
        ),
    ),
    "GET /api/v1/twins/{twin_id}/whatif": OperationDoc(errors=(404,), never=(503,)),
    # A batch whose runs' jobs cannot be read is answered as last stored, never with a 503.
    "GET /api/v1/twins/{twin_id}/whatif/{batch_id}": OperationDoc(errors=(404,), never=(503,)),
    # -- run history (503: the run store's database is unreachable)
    "GET /api/v1/runs": OperationDoc(errors=(503,)),
    "GET /api/v1/runs/export": OperationDoc(errors=(503,)),
    "GET /api/v1/runs/stats": OperationDoc(errors=(503,)),
    "GET /api/v1/runs/status": OperationDoc(errors=(503,)),
    "GET /api/v1/runs/{job_id}": OperationDoc(errors=(404, 503)),
    "GET /api/v1/runs/{job_id}/logs": OperationDoc(errors=(404, 503)),
    "GET /api/v1/runs/{job_id}/artifacts": OperationDoc(errors=(404, 503)),
    "GET /api/v1/runs/{job_id}/artifacts/{name}": OperationDoc(errors=(404, 503)),
    # -- schedules, triggers and hooks (404 unknown, 409 name taken, 503 store or Redis down)
    "GET /api/v1/schedules": OperationDoc(errors=(503,)),
    "POST /api/v1/schedules": OperationDoc(errors=(404, 409, 503)),
    "POST /api/v1/schedules/preview": OperationDoc(errors=()),
    "GET /api/v1/schedules/{schedule_id}": OperationDoc(errors=(404, 503)),
    "PUT /api/v1/schedules/{schedule_id}": OperationDoc(errors=(404, 409, 503)),
    "DELETE /api/v1/schedules/{schedule_id}": OperationDoc(errors=(404, 503)),
    "POST /api/v1/schedules/{schedule_id}/pause": OperationDoc(errors=(404, 503)),
    "POST /api/v1/schedules/{schedule_id}/resume": OperationDoc(errors=(404, 503)),
    "POST /api/v1/schedules/{schedule_id}/run-now": OperationDoc(errors=(404, 503)),
    "GET /api/v1/schedules/{schedule_id}/runs": OperationDoc(errors=(404, 503)),
    "GET /api/v1/triggers": OperationDoc(errors=(503,)),
    "POST /api/v1/triggers": OperationDoc(errors=(404, 503)),
    "GET /api/v1/triggers/{trigger_id}": OperationDoc(errors=(404, 503)),
    "DELETE /api/v1/triggers/{trigger_id}": OperationDoc(errors=(404, 503)),
    "POST /api/v1/triggers/{trigger_id}/secret": OperationDoc(errors=(404, 503)),
    "POST /api/v1/hooks/{trigger_id}": OperationDoc(errors=(401, 503)),
    # -- alerts and the audit log (503: the run store's database is unreachable)
    "POST /api/v1/alerts/rules": OperationDoc(errors=(503,)),
    "GET /api/v1/alerts/rules": OperationDoc(errors=(503,)),
    "GET /api/v1/alerts/rules/{rule_id}": OperationDoc(errors=(404, 503)),
    "PUT /api/v1/alerts/rules/{rule_id}": OperationDoc(errors=(404, 503)),
    "DELETE /api/v1/alerts/rules/{rule_id}": OperationDoc(errors=(404, 503)),
    "GET /api/v1/alerts": OperationDoc(errors=(503,)),
    "GET /api/v1/alerts/{alert_id}": OperationDoc(errors=(404, 503)),
    "POST /api/v1/alerts/{alert_id}/ack": OperationDoc(errors=(404, 503)),
    "GET /api/v1/audit": OperationDoc(errors=(503,)),
    # -- API keys (admin; 503: the run store's database is unreachable)
    "GET /api/v1/keys": OperationDoc(errors=(503,)),
    "POST /api/v1/keys": OperationDoc(errors=(409, 422, 503)),
    "DELETE /api/v1/keys/{key_id}": OperationDoc(errors=(404, 503)),
    # -- backups (409: another backup runs; 422: secrets without a passphrase)
    "POST /api/v1/admin/backups": OperationDoc(
        errors=(409, 422),
        links=_links(
            "BackupTask",
            {"Get": "GET /api/v1/admin/backups/tasks/{task_id}"},
            task_id="id",
        ),
    ),
    "GET /api/v1/admin/backups": OperationDoc(),
    "GET /api/v1/admin/backups/tasks/{task_id}": OperationDoc(errors=(404,)),
    # 409: the archive a running task is still writing (its name is known from POST).
    "GET /api/v1/admin/backups/{name}": OperationDoc(errors=(404, 409)),
    "DELETE /api/v1/admin/backups/{name}": OperationDoc(errors=(404, 409)),
    "POST /api/v1/admin/restore/reconcile": OperationDoc(errors=(409, 503)),
    "POST /api/v1/queue/digital-twins/enqueue": OperationDoc(
        errors=(404, 422),
        links={
            **_JOB_LINKS,
            **_links(
                "Run", {"Get": f"GET {_TWIN}/runs/{{run_id}}"}, twin_id="twin_id", run_id="run_id"
            ),
        },
    ),
}

_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def _depends_on(dependant: Dependant, call: Any) -> bool:
    return any(dep.call is call or _depends_on(dep, call) for dep in dependant.dependencies)


def _routes(app: FastAPI) -> dict[str, APIRoute]:
    """The API routes by ``"METHOD /path"``."""
    found: dict[str, APIRoute] = {}
    for route in flat_routes(app.routes):
        original = getattr(route, "original_route", route)
        if isinstance(original, APIRoute):
            for method in route.methods or ():
                found[f"{method} {route.path_format}"] = original
    return found


def _component_schemas() -> dict[str, Any]:
    _, top = models_json_schema(
        [(ErrorBody, "serialization"), (ValidationErrorBody, "serialization")],
        ref_template="#/components/schemas/{model}",
    )
    defs: dict[str, Any] = top.get("$defs", {})
    return defs


def _error_answer(status: int) -> dict[str, Any]:
    model = "ValidationErrorBody" if status == 422 else "ErrorBody"
    answer: dict[str, Any] = {
        "description": DESCRIPTIONS[status],
        "content": {_JSON: {"schema": {"$ref": f"#/components/schemas/{model}"}}},
    }
    if status == 401:
        answer["headers"] = {
            "WWW-Authenticate": {
                "description": 'The scheme to use: `Bearer realm="mimir"`.',
                "schema": {"type": "string"},
            }
        }
    return answer


def _inferred(operation: dict[str, Any], route: APIRoute | None, token: bool) -> set[int]:
    statuses: set[int] = set()
    if token:
        statuses.add(401)
    if operation.get("parameters") or operation.get("requestBody"):
        statuses.add(422)
    body = operation.get("requestBody", {}).get("content", {})
    if body:
        statuses.add(413)
    if _JSON in body and route is not None and route.body_field is not None:
        statuses.add(400)  # malformed JSON
    if route is not None and (
        _depends_on(route.dependant, get_redis) or _depends_on(route.dependant, get_ontology_store)
    ):
        statuses.add(503)
    return statuses


def _success(operation: dict[str, Any], statuses: tuple[int, ...]) -> None:
    responses = operation["responses"]
    documented = [code for code in responses if code.startswith("2")]
    template = responses[documented[0]] if documented else {"description": "Success"}
    for code in documented:
        del responses[code]
    for status in statuses:
        answer = copy.deepcopy(template)
        answer["description"] = {
            200: "Done.",
            201: "Created (or run to its end here and now).",
            202: "Accepted: queued as a job.",
        }.get(status, answer.get("description", "Success"))
        responses[str(status)] = answer


def _link(
    operation: dict[str, Any], links: dict[str, tuple[str, dict[str, str]]], schema: dict[str, Any]
) -> None:
    if not links:
        return
    documented: dict[str, Any] = {}
    for name, (target, parameters) in links.items():
        method, path = target.split(" ", 1)
        operation_id = schema["paths"][path][method.lower()]["operationId"]
        documented[name] = {"operationId": operation_id, "parameters": parameters}
    for code, answer in operation["responses"].items():
        if code.startswith("2"):
            answer["links"] = copy.deepcopy(documented)


def _constrain(operation: dict[str, Any], parameters: dict[str, dict[str, Any]]) -> None:
    for parameter in operation.get("parameters", []):
        extra = parameters.get(parameter.get("name"))
        if extra:
            parameter.setdefault("schema", {}).update(extra)


def _document(schema: dict[str, Any], app: FastAPI, token: bool) -> dict[str, Any]:
    routes = _routes(app)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.update(_component_schemas())
    for path, item in schema.get("paths", {}).items():
        for method, operation in item.items():
            if method not in _METHODS:
                continue
            key = f"{method.upper()} {path}"
            doc = ROUTES.get(key, OperationDoc())
            for name, value in doc.extra.items():
                if name == "parameters":
                    operation["parameters"] = [*operation.get("parameters", []), *value]
                elif name == "responses":
                    operation["responses"].update(copy.deepcopy(value))
                else:
                    operation[name] = copy.deepcopy(value)
            route_token = token and path not in OPEN_PATHS
            statuses = _inferred(operation, routes.get(key), route_token) - set(doc.never)
            statuses |= set(doc.errors)
            responses = operation.setdefault("responses", {})
            for status in sorted(statuses):
                responses[str(status)] = _error_answer(status)
            if doc.success:
                _success(operation, doc.success)
            _constrain(operation, doc.parameters)
            _link(operation, doc.links, schema)
            if token and not route_token:
                operation["security"] = []
            role = required_role(method.upper(), path)
            if role is not None:  # the role a key needs (server/roles.py)
                operation["x-mimir-role"] = role.name
            operation["responses"] = dict(sorted(responses.items()))
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)
    if token:
        schema["components"]["securitySchemes"] = {
            "bearerAuth": {
                "type": "http",
                "scheme": "bearer",
                "description": "An API key (`mk_…`, with a role: see `x-mimir-role`) "
                "or the server's `MIMIR_API_TOKEN` (admin).",
            }
        }
        schema["security"] = [{"bearerAuth": []}]
    return schema


def install_openapi(app: FastAPI, *, token_required: bool) -> None:
    """Replace ``app.openapi`` by one that documents the real answers (module doc)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _document(FastAPI.openapi(app), app, token_required)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
