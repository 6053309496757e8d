"""Errors to HTTP answers, in one place: :data:`ERROR_ANSWERS` and the handlers that
:func:`install_error_handlers` registers. Core knows no HTTP; routes raise domain errors.

Every error answer is JSON ``{"error": "<message for a person>", "detail": ...}``:

=================================  ======  =============================================
raised                             status  ``detail``
=================================  ======  =============================================
PipelineValidationError            422     ``{"issues": [{message, line, column, ...}]}``
InvalidPipelineRequestError        422     ``null``
UnknownPluginError                 422     ``{"plugin", "suggestions"}``
PluginError, TemplateError         422     ``null``
PipelineNotFoundError              404     ``null``
PipelineExistsError                409     ``null``
PathEscapeError                    400     ``null``
LimitExceededError                 422     ``null``
ExecutionTimeoutError              504     ``null``
JobNotFoundError                   404     ``null``
JobStateError                      409     ``null``
QueueFullError                     503     ``null``; ``Retry-After: 5`` (Redis at maxmemory:
                                               the message starts "queue full: ")
Redis's OOM refusal (raw, outside   503     as QueueFullError
  the queue's own calls)
QueueUnavailableError              503     ``null``
QueueCommandError                  500     as for anything else (last row)
other QueueError                   400     ``null``
OntologyNotFoundError              404     ``null``
OntologyExistsError                409     ``null``
RdfParseError                      422     ``{"line", "column"}``
UnsupportedFormatError             415     ``null``
FederationRefusedError             403     ``{"federation", "refused": [...]}``
QueryTimeoutError                  504     ``null``
SparqlError, other OntologyError   400     ``null``
EndpointError                      503     ``null``
sqlalchemy OperationalError,       503     ``null`` (a fixed message: the driver's text
  InterfaceError (run store down)              names the SQL and the host; it is logged)
TwinNotFoundError                  404     ``null``
TwinConflictError                  409     ``null``
TwinError                          422     ``null``
InvalidTwinRequestError            422     ``[{"field", "message"}]`` (a parameter that does
                                               not fit the twin or run)
other MimirError                   400     ``null``
request body not JSON              400     ``{"position": n}``
request body/params invalid        422     ``[{"field", "message"}]``
request body over 16 MiB           413     ``null``
HTTP errors (404 route, 405 ...)   as is   ``null``
anything else                      500     ``{"error": "internal error", "request_id"}``
=================================  ======  =============================================

The last row is produced by :class:`mimir.server.middleware.RequestLogMiddleware`,
which logs the traceback with the request id and never sends it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis.exceptions import ResponseError
from sqlalchemy.exc import InterfaceError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from mimir.core.errors import (
    ExecutionTimeoutError,
    LimitExceededError,
    MimirError,
    PathEscapeError,
    PipelineExistsError,
    PipelineNotFoundError,
    PipelineValidationError,
    PluginError,
    TemplateError,
    UnknownPluginError,
)
from mimir.core.ontology.errors import (
    EndpointError,
    FederationRefusedError,
    OntologyExistsError,
    OntologyNotFoundError,
    QueryTimeoutError,
    RdfParseError,
    UnsupportedFormatError,
)
from mimir.core.pipeline.requests import InvalidPipelineRequestError
from mimir.core.queue.errors import (
    JobNotFoundError,
    JobStateError,
    QueueCommandError,
    QueueFullError,
    QueueUnavailableError,
    is_oom,
    queue_full_message,
)
from mimir.core.twin.simulation import TwinError
from mimir.core.twin.store import (
    InvalidTwinRequestError,
    TwinConflictError,
    TwinNotFoundError,
)
from mimir.server.logs import printable

__all__ = [
    "ERROR_ANSWERS",
    "QUEUE_FULL_RETRY_AFTER",
    "ErrorAnswer",
    "answer_for",
    "error_response",
    "install_error_handlers",
]

logger = logging.getLogger(__name__)

#: A status and how to make ``detail`` from the error (``None``: ``detail`` is null).
ErrorAnswer = tuple[int, Callable[[Any], Any] | None]
#: A server fault: no answer here; the request middleware logs it and sends the JSON 500.
SERVER_FAULT = 500
#: Seconds a client is asked to wait before retrying a refused write on a full Redis.
QUEUE_FULL_RETRY_AFTER = 5

#: Every domain error the API answers. The most specific class an error is an instance
#: of decides (its MRO, as Starlette looks handlers up); ``MimirError`` is the fallback.
ERROR_ANSWERS: dict[type[Exception], ErrorAnswer] = {
    MimirError: (400, None),
    # pipelines, plugins, limits (mimir.core.errors)
    PipelineValidationError: (422, lambda e: {"issues": [i.model_dump() for i in e.errors]}),
    InvalidPipelineRequestError: (422, None),
    PluginError: (422, None),
    UnknownPluginError: (422, lambda e: {"plugin": e.name, "suggestions": e.suggestions}),
    TemplateError: (422, None),
    PipelineNotFoundError: (404, None),
    PipelineExistsError: (409, None),
    PathEscapeError: (400, None),
    LimitExceededError: (422, None),
    ExecutionTimeoutError: (504, None),
    # the job queue (mimir.core.queue.errors); other QueueErrors fall back to 400
    JobNotFoundError: (404, None),
    JobStateError: (409, None),
    QueueUnavailableError: (503, None),
    QueueFullError: (503, None),  # with Retry-After (see _domain_error)
    QueueCommandError: (SERVER_FAULT, None),
    # ontologies and SPARQL (mimir.core.ontology.errors); SparqlError and the rest: 400
    OntologyNotFoundError: (404, None),
    OntologyExistsError: (409, None),
    RdfParseError: (422, lambda e: {"line": e.line, "column": e.column}),
    UnsupportedFormatError: (415, None),
    FederationRefusedError: (403, lambda e: e.detail),
    QueryTimeoutError: (504, None),
    EndpointError: (503, None),
    # digital twins (TwinError is a ValueError: a scenario that does not fit its twin)
    TwinNotFoundError: (404, None),
    TwinConflictError: (409, None),
    TwinError: (422, None),
    InvalidTwinRequestError: (422, lambda e: [{"field": e.field, "message": e.message}]),
}


def answer_for(exc: Exception) -> ErrorAnswer | None:
    """The entry of :data:`ERROR_ANSWERS` for ``exc``, or ``None`` if it has none."""
    for kind in type(exc).__mro__:
        if kind in ERROR_ANSWERS:
            return ERROR_ANSWERS[kind]
    return None


def error_response(
    status: int, message: str, detail: Any = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    """The one JSON shape of every error answer."""
    return JSONResponse(
        {"error": message, "detail": jsonable_encoder(detail)}, status_code=status, headers=headers
    )


async def _domain_error(request: Request, exc: Exception) -> JSONResponse:
    answer = answer_for(exc)
    if answer is None or answer[0] == SERVER_FAULT:
        # Not the caller's doing: RequestLogMiddleware logs the traceback with the
        # request id and answers the one JSON 500.
        raise exc
    status, detail = answer
    logger.info(
        "%s %s -> %d: %s",
        printable(request.method),
        printable(request.scope["path"]),  # request.url drops newlines and tabs
        status,
        printable(exc),
    )
    headers = (
        {"Retry-After": str(QUEUE_FULL_RETRY_AFTER)} if isinstance(exc, QueueFullError) else None
    )
    return error_response(status, str(exc), detail(exc) if detail else None, headers)


async def _redis_refused(request: Request, exc: Exception) -> JSONResponse:
    """A Redis error that no queue call translated (a route's own Redis command): Redis's
    OOM refusal is a full queue, answered as :class:`QueueFullError`; anything else is a
    server fault (the middleware's JSON 500)."""
    if not is_oom(exc):
        raise exc
    full = QueueFullError(queue_full_message("request"))
    full.__cause__ = exc
    return await _domain_error(request, full)


def _field(loc: tuple[Any, ...] | list[Any]) -> str:
    # ("body", "context") -> "context"; ("query", "timeout") -> "query.timeout"
    parts = [str(part) for part in loc]
    if parts and parts[0] == "body":
        parts = parts[1:]
    return ".".join(parts) or "body"


def _message(request: Request, error: Mapping[str, Any]) -> str:
    kind = error.get("type")
    if kind == "missing":
        return "required field is missing"
    if kind == "extra_forbidden":
        return "unknown field"
    if tuple(error.get("loc", ())) == ("body",) and kind in {"model_attributes_type", "dict_type"}:
        content_type = request.headers.get("content-type", "")
        if "json" not in content_type:
            return f"the body must be a JSON object sent as application/json, not {content_type!r}"
        return "the body must be a JSON object"
    return str(error.get("msg", "invalid value"))


async def _request_invalid(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    for error in errors:
        if error.get("type") == "json_invalid":
            reason = (error.get("ctx") or {}).get("error", "invalid JSON")
            position = error["loc"][-1] if error.get("loc") else None
            message = f"malformed JSON body: {reason}"
            if isinstance(position, int):
                message += f" (at character {position})"
            return error_response(400, message, {"position": position})
    problems = [
        {"field": _field(error.get("loc", ())), "message": _message(request, error)}
        for error in errors
    ]
    text = "; ".join(f"{p['field']}: {p['message']}" for p in problems)
    return error_response(422, f"invalid request: {text}", problems)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    message = exc.detail if isinstance(exc.detail, str) else "request failed"
    if exc.status_code == 404 and message == "Not Found":
        message = f"no such endpoint: {request.method} {request.url.path}"
    elif exc.status_code == 405:
        message = f"method {request.method} not allowed on {request.url.path}"
    return error_response(exc.status_code, message, None, getattr(exc, "headers", None))


async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    logger.warning(
        "%s %s -> 503: run store unavailable: %s",
        printable(request.method),
        printable(request.scope["path"]),
        printable(getattr(exc, "orig", None) or exc),
    )
    return error_response(503, "the run store's database is unavailable", None)


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that turn errors into the JSON answers above."""
    for kind in ERROR_ANSWERS:
        app.add_exception_handler(kind, _domain_error)
    # Every route that reads or writes the run store (the routes need not each catch it).
    app.add_exception_handler(ResponseError, _redis_refused)  # OOM: queue full
    app.add_exception_handler(OperationalError, _database_unavailable)
    app.add_exception_handler(InterfaceError, _database_unavailable)
    app.add_exception_handler(RequestValidationError, _request_invalid)
    app.add_exception_handler(StarletteHTTPException, _http_error)
