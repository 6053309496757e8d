"""The HTTP methods no route declares: ``OPTIONS``, ``HEAD``, and a true ``Allow`` on 405.

RFC 9110 asks a server to answer ``OPTIONS`` on a resource with the methods it supports
(§9.3.7), to support ``HEAD`` wherever it supports ``GET`` (§9.3.2), and to list in the
``Allow`` header of a 405 the methods the target resource supports (§15.5.6).
Starlette's router cannot: when several routes share a path (``GET`` and ``POST
/api/v1/twins``), its 405 lists the methods of the first route alone, and it has no
``OPTIONS`` nor ``HEAD`` of its own. This pure ASGI middleware looks at every route:

- ``OPTIONS`` on a path some route serves: ``204`` with ``Allow``;
- ``HEAD`` where ``GET`` is served: the ``GET`` answer's status and headers, no body
  (a stream, such as the event stream, is told the client has gone once the headers
  are out);
- any 405 (from the router or a handler): ``Allow`` lists every method of the path.

A path no route serves is left to the router (404). It sits inside the token check, so
these answers need the token like everything else.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mimir.server.middleware import send_json_error

__all__ = ["MethodsMiddleware", "allowed_methods", "flat_routes"]

_ORDER = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def flat_routes(routes: Sequence[BaseRoute]) -> list[Any]:
    """Every route of ``routes``, the routes of included routers too.

    FastAPI 0.13x+ keeps an included router as one entry whose routes it resolves
    itself; ``iter_route_contexts`` flattens them (each with ``path_format``,
    ``methods``, ``matches`` and ``original_route``). Older versions copy every route
    into the app's list, which is flat already.
    """
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # older FastAPI: the list is flat
        return list(routes)
    return list(iter_route_contexts(routes))


def allowed_methods(routes: Sequence[BaseRoute], scope: Scope) -> list[str]:
    """Methods served on ``scope``'s path (with ``HEAD`` and ``OPTIONS``), in the usual
    order; empty when no route serves the path.

    As in OpenAPI, the most concrete path template that matches names the resource:
    ``/api/v1/pipelines/execute`` is that path's (``POST``), not ``/api/v1/pipelines/{name}``'s.
    """
    templates: dict[str, set[str]] = {}
    for route in flat_routes(routes):
        served = getattr(route, "methods", None)
        if served is None:
            continue
        match, _ = route.matches(scope)
        if match is not Match.NONE:
            templates.setdefault(route.path_format, set()).update(served)
    if not templates:
        return []
    fewest = min(template.count("{") for template in templates)
    methods = set().union(
        *(served for template, served in templates.items() if template.count("{") == fewest)
    )
    if "GET" in methods:
        methods.add("HEAD")
    methods.add("OPTIONS")
    return sorted(methods, key=lambda m: (_ORDER.index(m) if m in _ORDER else len(_ORDER), m))


class MethodsMiddleware:
    """``OPTIONS``, ``HEAD`` and complete ``Allow`` headers (module doc)."""

    def __init__(self, app: ASGIApp, routes: list[BaseRoute]) -> None:
        self.app = app
        #: The app's route list itself (routers included later are seen too).
        self.routes = routes
        self._concrete: frozenset[str] = frozenset()
        self._concrete_of = -1

    def _concrete_paths(self) -> frozenset[str]:
        """Paths of routes without parameters (recomputed when routers are added)."""
        if self._concrete_of != len(self.routes):
            self._concrete = frozenset(
                route.path_format
                for route in flat_routes(self.routes)
                if getattr(route, "methods", None) and "{" not in route.path_format
            )
            self._concrete_of = len(self.routes)
        return self._concrete

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        if method not in ("OPTIONS", "HEAD") and scope["path"] in self._concrete_paths():
            # The router would hand GET /api/v1/pipelines/execute to .../{name}: the
            # resource is the concrete path, which has no GET.
            methods = allowed_methods(self.routes, scope)
            if methods and method not in methods:
                await _not_allowed(send, method, scope["path"], methods)
                return
        if method in ("OPTIONS", "HEAD"):
            methods = allowed_methods(self.routes, scope)
            if method == "OPTIONS" and methods:
                allow = (b"allow", ", ".join(methods).encode())
                await send({"type": "http.response.start", "status": 204, "headers": [allow]})
                await send({"type": "http.response.body", "body": b""})
                return
            if method == "HEAD" and "GET" in methods:
                await self._head(scope, receive, send)
                return

        async def send_with_allow(message: Message) -> None:
            # Only a 405 pays for looking at every route.
            if message["type"] == "http.response.start" and message["status"] == 405:
                methods = allowed_methods(self.routes, scope)
                if methods:
                    headers = [
                        (k, v) for k, v in message.get("headers", []) if k.lower() != b"allow"
                    ]
                    allow = (b"allow", ", ".join(methods).encode())
                    message = {**message, "headers": [*headers, allow]}
            await send(message)

        await self.app(scope, receive, send_with_allow)

    async def _head(self, scope: Scope, receive: Receive, send: Send) -> None:
        answered = asyncio.Event()

        async def receive_until_answered() -> Message:
            if answered.is_set():
                return {"type": "http.disconnect"}
            incoming = asyncio.ensure_future(receive())
            waiting = asyncio.ensure_future(answered.wait())
            done, pending = await asyncio.wait(
                {incoming, waiting}, return_when=asyncio.FIRST_COMPLETED
            )
            for task in pending:
                task.cancel()
            if incoming in done:
                return incoming.result()
            return {"type": "http.disconnect"}

        async def send_headers_only(message: Message) -> None:
            if answered.is_set():
                return
            if message["type"] == "http.response.start":
                await send(message)
                await send({"type": "http.response.body", "body": b""})
                answered.set()

        await self.app({**scope, "method": "GET"}, receive_until_answered, send_headers_only)


async def _not_allowed(send: Send, method: str, path: str, methods: list[str]) -> None:
    await send_json_error(
        send,
        405,
        f"method {method} not allowed on {path}",
        [(b"allow", ", ".join(methods).encode())],
    )
