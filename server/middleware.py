"""Per-request context: an id, one log line per request, and a JSON 500 for crashes.

A pure ASGI middleware (streaming answers such as event streams pass through
untouched). The request id comes from a sane ``X-Request-ID`` header or is made up,
and is returned in ``X-Request-ID``. Successful ``/health``, ``/ready`` and ``/metrics``
calls are logged at DEBUG (probes poll them), and so are successful GETs marked
``X-Mimir-Poll: 1`` (a console's periodic reads of status, workers and jobs: a console left
open would otherwise fill the log); everything else at INFO. The log line holds method,
path, status and time: never headers (the ``Authorization`` token stays out of the logs)
nor query strings. Method and path are logged through :func:`printable`: a ``%0a`` or
``%1b`` in a URL shows as ``\\x0a``/``\\x1b`` and cannot start a fake line.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Sequence

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mimir.core.logtext import request_id_var
from mimir.server.logs import printable

__all__ = ["BodySizeLimitMiddleware", "RequestLogMiddleware", "send_json_error"]

logger = logging.getLogger("mimir.server.access")
_errors = logging.getLogger(__name__)
_SANE_ID = re.compile(rb"^[A-Za-z0-9._-]{1,64}$")
#: Paths polled by probes and scrapers, logged at DEBUG unless they fail.
_QUIET = frozenset({"/health", "/ready", "/metrics"})


async def send_json_error(
    send: Send,
    status: int,
    message: str,
    headers: Sequence[tuple[bytes, bytes]] = (),
    **fields: object,
) -> None:
    """Answer from ASGI middleware in the API's error shape ``{"error", "detail": null}``
    (plus ``fields``), for refusals made before the application runs."""
    body = json.dumps({"error": message, "detail": None, **fields}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class RequestLogMiddleware:
    """Request id, access log line, and a JSON 500 answer for unhandled exceptions."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(b"x-request-id", b"")
        request_id = given.decode() if _SANE_ID.match(given) else uuid.uuid4().hex[:16]
        scope.setdefault("state", {})["request_id"] = request_id
        # For log lines written below the routes (SPARQL SERVICE/LOAD decisions).
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", request_id.encode()),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            _errors.exception(
                "unhandled error in %s %s (request %s)",
                printable(scope["method"]),
                printable(scope["path"]),
                request_id,
            )
            if status == 0:  # nothing sent yet: answer with JSON, never a traceback
                status = 500
                await send_json_error(
                    send,
                    500,
                    "internal error",
                    [(b"x-request-id", request_id.encode())],
                    request_id=request_id,
                )
        finally:
            request_id_var.reset(token)
            # Probes and scrapes come every few seconds: log them only when they fail.
            quiet = scope["path"] in _QUIET or (
                scope["method"] == "GET" and (b"x-mimir-poll", b"1") in scope["headers"]
            )
            level = logging.DEBUG if quiet and status < 400 else logging.INFO
            if logger.isEnabledFor(level):
                logger.log(
                    level,
                    "%s %s %d %.1fms id=%s",
                    printable(scope["method"]),
                    printable(scope["path"]),
                    status,
                    (time.perf_counter() - started) * 1000,
                    request_id,
                )


class BodySizeLimitMiddleware:
    """Refuses request bodies over ``max_bytes`` with 413 (JSON, like every error).

    A declared ``Content-Length`` is checked before anything is read; a chunked body is
    counted as it arrives and stopped once over the limit. ``exempt`` names the
    ``(method, path)`` of routes that enforce a limit of their own (the ontology upload,
    ``MIMIR_MAX_UPLOAD_BYTES``); every other route keeps ``max_bytes``.
    """

    def __init__(
        self, app: ASGIApp, max_bytes: int, exempt: frozenset[tuple[str, str]] = frozenset()
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.exempt = exempt

    def _too_large(self) -> str:
        return f"request body larger than {self.max_bytes} bytes (limit MIMIR_MAX_BODY_BYTES)"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (scope["method"], scope["path"]) in self.exempt:
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await send_json_error(send, 413, self._too_large(), [(b"connection", b"close")])
            return
        received = 0

        async def receive_counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # FastAPI re-raises HTTPExceptions from body reading: a JSON 413.
                    raise HTTPException(413, self._too_large())
            return message

        await self.app(scope, receive_counted, send)
