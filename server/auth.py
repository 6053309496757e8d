"""Bearer-token protection: with ``settings.api_token`` set, every route but ``/health``
needs ``Authorization: Bearer <token>``.

A pure ASGI middleware, so it guards everything the app serves (routers added by any
part, the OpenAPI docs, event streams) before routing. Tokens are compared in constant
time and never logged.
"""

from __future__ import annotations

import hmac
import logging

from starlette.types import ASGIApp, Receive, Scope, Send

from mimir.server.logs import printable
from mimir.server.middleware import send_json_error

__all__ = ["OPEN_PATHS", "OPEN_PREFIXES", "BearerTokenMiddleware", "token_matches"]

logger = logging.getLogger(__name__)

#: Paths answered without a token (liveness probes must not need the secret).
OPEN_PATHS = frozenset({"/health", "/ready"})
#: Paths that carry a secret of their own instead of the API token: webhook triggers
#: (``POST /api/v1/hooks/{trigger_id}``, checked against that trigger's secret).
OPEN_PREFIXES = ("/api/v1/hooks/",)


def token_matches(header: bytes | None, token: bytes) -> bool:
    """True when ``header`` is ``Bearer <token>`` (constant-time comparison)."""
    if not header:
        return False
    scheme, _, given = header.partition(b" ")
    if scheme.lower() != b"bearer":
        return False
    return hmac.compare_digest(given.strip(), token)


class BearerTokenMiddleware:
    """Answers 401 JSON to any HTTP request without the right bearer token."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self._token = token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if (
            scope["type"] not in {"http", "websocket"}
            or path in OPEN_PATHS
            or path.startswith(OPEN_PREFIXES)
        ):
            await self.app(scope, receive, send)
            return
        header = dict(scope["headers"]).get(b"authorization")
        if token_matches(header, self._token):
            await self.app(scope, receive, send)
            return
        reason = "missing bearer token" if not header else "invalid bearer token"
        logger.warning(
            "%s %s refused: %s",
            printable(scope.get("method", "WS")),
            printable(scope["path"]),
            reason,
        )
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        await send_json_error(
            send,
            401,
            f"unauthorized: {reason} (send 'Authorization: Bearer <MIMIR_API_TOKEN>')",
            [(b"www-authenticate", b'Bearer realm="mimir"')],
        )
