"""Errors to HTTP answers, in one place.

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
other MimirError                   400     ``null``
request body not JSON              400     ``{"position": n}``
request body/params invalid        422     ``[{"field", "message"}]``
request body over 16 MiB           413     ``null``
HTTP errors (404 route, 405 ...)   as is   ``null``
anything else                      500     ``{"error": "internal error", "request_id"}``
=================================  ======  =============================================

The last row is produced by :class:`mimir.server.middleware.RequestContextMiddleware`,
which logs the traceback with the request id and never sends it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
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
from mimir.core.pipeline.requests import InvalidPipelineRequestError
from mimir.core.twin.store import TwinConflictError
from mimir.server.logs import printable

__all__ = ["error_response", "install_error_handlers", "status_for"]

logger = logging.getLogger(__name__)

#: Most specific first: the first class an error is an instance of decides its status.
_STATUS: list[tuple[type[MimirError], int]] = [
    (PipelineValidationError, 422),
    (InvalidPipelineRequestError, 422),
    (PipelineNotFoundError, 404),
    (PipelineExistsError, 409),
    (TwinConflictError, 409),
    (PathEscapeError, 400),
    (LimitExceededError, 422),
    (ExecutionTimeoutError, 504),
    (PluginError, 422),
    (TemplateError, 422),
]


def status_for(exc: MimirError) -> int:
    """The HTTP status that answers ``exc``."""
    for kind, status in _STATUS:
        if isinstance(exc, kind):
            return status
    return 400


def error_response(
    status: int, message: str, detail: Any = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    """The one JSON shape of every error answer."""
    return JSONResponse(
        {"error": message, "detail": jsonable_encoder(detail)}, status_code=status, headers=headers
    )


def _mimir_detail(exc: MimirError) -> Any:
    if isinstance(exc, PipelineValidationError):
        return {"issues": [issue.model_dump() for issue in exc.errors]}
    if isinstance(exc, UnknownPluginError):
        return {"plugin": exc.name, "suggestions": exc.suggestions}
    return None


async def _mimir_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, MimirError)
    status = status_for(exc)
    logger.info(
        "%s %s -> %d: %s",
        printable(request.method),
        printable(request.scope["path"]),  # request.url drops newlines and tabs
        status,
        printable(exc),
    )
    return error_response(status, str(exc), _mimir_detail(exc))


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


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that turn errors into the JSON answers above."""
    app.add_exception_handler(MimirError, _mimir_error)
    app.add_exception_handler(RequestValidationError, _request_invalid)
    app.add_exception_handler(StarletteHTTPException, _http_error)
