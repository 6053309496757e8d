"""The API request's span: a thin ASGI middleware, installed only when tracing is on.

Each HTTP request gets a server span named ``METHOD /route/{template}`` (renamed once the
router has matched; ``METHOD`` alone when nothing matched), continuing the caller's
``traceparent`` header when it sends one, with the HTTP semantic-convention attributes
(method, route, path, status code; a 5xx answer is an error). Whatever the handler
enqueues carries this span's context, so the job's trace starts here.
"""

from __future__ import annotations

from typing import Any

from opentelemetry.trace import SpanKind, Status, StatusCode
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mimir.core import telemetry

__all__ = ["TracingMiddleware"]


def _headers(scope: Scope) -> dict[str, str]:
    wanted = {b"traceparent", b"tracestate"}
    return {
        name.decode("latin-1"): value.decode("latin-1")
        for name, value in scope.get("headers", ())
        if name in wanted
    }


class TracingMiddleware:
    """Wraps every HTTP request in a server span (see the module doc)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not telemetry.tracing_enabled():
            await self.app(scope, receive, send)
            return
        carrier = _headers(scope)
        method = scope.get("method", "GET")
        path = scope.get("path", "")
        with telemetry.span(
            method,
            parent=carrier.get("traceparent"),
            kind=SpanKind.SERVER,
            attributes=lambda: {
                "http.request.method": method,
                "url.path": path,
                "url.scheme": scope.get("scheme", "http"),
                "network.protocol.version": scope.get("http_version", "1.1"),
            },
        ) as span:
            status_code = 0

            async def send_traced(message: Message) -> None:
                nonlocal status_code
                if message["type"] == "http.response.start":
                    status_code = int(message["status"])
                await send(message)

            try:
                await self.app(scope, receive, send_traced)
            finally:
                if span.is_recording():
                    route: Any = scope.get("route")
                    template = getattr(route, "path", None)
                    if template:
                        span.update_name(f"{method} {template}")
                        span.set_attribute("http.route", template)
                    if status_code:
                        span.set_attribute("http.response.status_code", status_code)
                        if status_code >= 500:
                            span.set_status(Status(StatusCode.ERROR))
