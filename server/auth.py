"""Who may call what: the bootstrap token, API keys with roles, and each route's role.

:class:`AuthMiddleware` is a pure ASGI middleware, so it guards everything the app serves
(routers added by any part, the OpenAPI docs, event streams) before routing, and before a
body is read: a key whose role is too low gets its 403 whatever it sends.

- ``MIMIR_API_TOKEN`` (the bootstrap token) is an ``admin`` key named ``token``,
  compared in constant time.
- API keys (``mk_<id>_<secret>``, :mod:`mimir.core.runstore.keys`) carry a role. A key is
  looked up by its id (one row, one scrypt verification, ~60 ms) and then kept verified
  in memory for :data:`KEY_CACHE_SECONDS` (as a SHA-256 of the key, never the key), so a
  request pays a dictionary lookup and one SHA-256. Revoking a key on this server drops
  it from the cache at once; another server stops accepting it within
  :data:`KEY_CACHE_SECONDS`. A key's last use is written at most once a minute.
- Auth is on when the token is set **or** any key exists: creating the first key turns
  it on (within :data:`ANY_KEYS_SECONDS` when the key was created by another process).
  With neither, every call passes as today (the server refuses to listen beyond
  loopback without a token unless ``--insecure``).
- The role a route needs is :func:`mimir.server.roles.required_role`. No or a wrong key:
  401; a key below the route's role: 403 naming the role needed. Keys and tokens are
  never logged.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send

from mimir.core.runstore.keys import ApiKey, KeyStore, Role, parse_key, verify_key
from mimir.core.settings import Settings
from mimir.server.logs import printable
from mimir.server.methods import flat_routes
from mimir.server.middleware import send_json_error
from mimir.server.roles import required_role

__all__ = [
    "ANY_KEYS_SECONDS",
    "IDENTITY",
    "KEY_CACHE_SECONDS",
    "OPEN_PATHS",
    "OPEN_PREFIXES",
    "AuthMiddleware",
    "Identity",
    "KeyCache",
    "token_matches",
]

logger = logging.getLogger(__name__)

#: Paths answered without a token (liveness probes must not need the secret).
OPEN_PATHS = frozenset({"/health", "/ready"})
#: Paths that carry a secret of their own instead of the API token: webhook triggers
#: (``POST /api/v1/hooks/{trigger_id}``, checked against that trigger's secret).
OPEN_PREFIXES = ("/api/v1/hooks/",)
#: A verified key is trusted this long without the database (revocation elsewhere).
KEY_CACHE_SECONDS = 10.0
#: Whether any key exists is asked of the database at most this often.
ANY_KEYS_SECONDS = 5.0
#: A key's last use is written at most this often.
TOUCH_SECONDS = 60.0
#: The scope entry holding the caller's :class:`Identity` (read by the audit log).
IDENTITY = "mimir.identity"


@dataclass(frozen=True)
class Identity:
    #: ``token`` (the bootstrap token), ``key:<name>``, or ``local`` (auth off).
    actor: str
    role: Role


@dataclass
class _Entry:
    digest: bytes
    key: ApiKey
    expires: float
    touched: float


@dataclass
class KeyCache:
    """This server's verified keys, and whether any key exists (``app.state.key_cache``)."""

    entries: dict[str, _Entry] = field(default_factory=dict)
    any_keys: bool | None = None
    any_keys_at: float = 0.0

    def forget(self, key_id: str | None = None) -> None:
        """Drop a key (or all), and ask again whether keys exist: after a revocation or
        a creation on this server."""
        if key_id is None:
            self.entries.clear()
        else:
            self.entries.pop(key_id, None)
        self.any_keys_at = 0.0


def token_matches(header: bytes | None, token: bytes) -> bool:
    """True when ``header`` is ``Bearer <token>`` (constant-time comparison)."""
    given = _bearer(header)
    return given is not None and hmac.compare_digest(given, token)


def _bearer(header: bytes | None) -> bytes | None:
    if not header:
        return None
    scheme, _, given = header.partition(b" ")
    return given.strip() if scheme.lower() == b"bearer" else None


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class AuthMiddleware:
    """Authenticates every HTTP/WebSocket call and checks its route's role."""

    def __init__(self, app: ASGIApp, settings: Settings, routes: list[Any]) -> None:
        self.app = app
        self._token = settings.api_token.encode() if settings.api_token else None
        self.routes = routes
        self._flat: list[Any] = []
        self._flat_of = -1

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if (
            scope["type"] not in {"http", "websocket"}
            or path in OPEN_PATHS
            or path.startswith(OPEN_PREFIXES)
        ):
            await self.app(scope, receive, send)
            return
        try:
            identity = await self._identify(scope)
            if identity.role < Role.admin:
                self._check_role(scope, identity)
        except _Refused as refused:
            await self._refuse(scope, send, refused)
            return
        scope[IDENTITY] = identity
        await self.app(scope, receive, send)

    async def _identify(self, scope: Scope) -> Identity:
        header = dict(scope["headers"]).get(b"authorization")
        given = _bearer(header)
        if (
            given is not None
            and self._token is not None
            and hmac.compare_digest(given, self._token)
        ):
            return Identity("token", Role.admin)
        app = scope.get("app")
        state = getattr(app, "state", None)
        cache: KeyCache | None = getattr(state, "key_cache", None)
        engine = getattr(state, "db", None)
        if self._token is None and not await self._any_keys(cache, engine):
            return Identity("local", Role.admin)  # no token, no key: auth is off
        if given is None:
            raise _Refused(401, "missing bearer token" if not header else "invalid bearer token")
        key_id = parse_key(given.decode("ascii", "replace"))
        if key_id is None or cache is None or engine is None:
            raise _Refused(401, "invalid bearer token")
        digest = hashlib.sha256(given).digest()
        now = time.monotonic()
        entry = cache.entries.get(key_id)
        if entry is None or entry.expires < now or not hmac.compare_digest(entry.digest, digest):
            entry = await self._verify(cache, engine, key_id, given.decode(), digest, now)
        if now - entry.touched >= TOUCH_SECONDS:
            entry.touched = now
            try:
                await asyncio.to_thread(KeyStore(engine).touch, key_id, datetime.now(UTC))
            except Exception as exc:  # a missed "last use" must not refuse the call
                logger.warning("api key %s: last use not written: %s", entry.key.name, exc)
        return Identity(f"key:{entry.key.name}", Role[entry.key.role])

    async def _any_keys(self, cache: KeyCache | None, engine: Any) -> bool:
        if cache is None or engine is None:
            return False
        now = time.monotonic()
        if cache.any_keys is None or now - cache.any_keys_at >= ANY_KEYS_SECONDS:
            try:
                count = await asyncio.to_thread(KeyStore(engine).count)
            except Exception as exc:
                if cache.any_keys is None:
                    raise _Refused(503, f"cannot check API keys: run store: {exc}") from None
                logger.warning("api keys: run store unavailable, as before: %s", exc)
                return cache.any_keys  # as last seen (fail closed when keys existed)
            cache.any_keys, cache.any_keys_at = count > 0, now
        return cache.any_keys

    async def _verify(
        self, cache: KeyCache, engine: Any, key_id: str, key: str, digest: bytes, now: float
    ) -> _Entry:
        try:
            found = await asyncio.to_thread(KeyStore(engine).lookup, key_id)
        except Exception as exc:
            raise _Refused(503, f"cannot check the API key: run store: {exc}") from None
        if found is None:
            cache.entries.pop(key_id, None)
            raise _Refused(401, "unknown or revoked API key")
        record, stored = found
        if not await asyncio.to_thread(verify_key, key, stored):
            raise _Refused(401, "invalid API key")
        last = record.last_used_at
        age = (datetime.now(UTC) - last).total_seconds() if last else None
        touched = now - TOUCH_SECONDS if age is None or age >= TOUCH_SECONDS else now - age
        entry = _Entry(digest, record, now + KEY_CACHE_SECONDS, touched)
        cache.entries[key_id] = entry
        return entry

    def _template(self, scope: Scope) -> str | None:
        """The route template serving the call (the most concrete), ``None`` when none."""
        if self._flat_of != len(self.routes):
            self._flat = [r for r in flat_routes(self.routes) if getattr(r, "methods", None)]
            self._flat_of = len(self.routes)
        probe = scope
        if scope["type"] == "http" and scope["method"] == "HEAD":
            probe = {**scope, "method": "GET"}
        elif scope["type"] == "websocket":
            probe = {**scope, "type": "http", "method": "GET"}
        full = []
        for route in self._flat:
            match, _ = route.matches(probe)
            if match is Match.FULL:
                full.append(route.path_format)
        return min(full, key=lambda t: t.count("{")) if full else None

    def _check_role(self, scope: Scope, identity: Identity) -> None:
        method = scope.get("method", "GET")
        template = self._template(scope)
        needed = required_role(method, template)
        if needed is not None and identity.role < needed:
            raise _Refused(
                403,
                f"forbidden: {method} {template} needs the {needed.name} role; "
                f"{identity.actor} has {identity.role.name}",
            )

    async def _refuse(self, scope: Scope, send: Send, refused: _Refused) -> None:
        logger.warning(
            "%s %s refused: %s",
            printable(scope.get("method", "WS")),
            printable(scope["path"]),
            refused.message,
        )
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        headers = []
        message = refused.message
        if refused.status == 401:
            headers = [(b"www-authenticate", b'Bearer realm="mimir"')]
            message = (
                f"unauthorized: {message} (send 'Authorization: Bearer <key>': an API key "
                "or MIMIR_API_TOKEN)"
            )
        await send_json_error(send, refused.status, message, headers)
