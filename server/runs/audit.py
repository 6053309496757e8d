"""The audit middleware: every mutating API call, recorded in the background.

:class:`AuditMiddleware` sits inside the bearer-token check (a refused call never reaches
it, so 401s are not audited: they changed nothing, and the access log has them). For
each ``POST``/``PUT``/``PATCH``/``DELETE`` under ``/api/v1`` it notes, once the answer has
started:

- ``actor``: ``token`` when the API token was presented, ``trigger:<id>`` for a webhook
  delivery (``/api/v1/hooks/{trigger_id}``, which carries the trigger's own secret),
  ``local`` for a loopback caller without a token, else the client's address;
- ``action``: from the route template (:func:`action_name`): ``POST /api/v1/pipelines``
  is ``pipelines.create``, ``DELETE /api/v1/pipelines/{name}`` ``pipelines.delete``,
  ``POST /api/v1/queue/jobs/{job_id}/cancel`` ``queue.jobs.cancel``;
- ``target``: the path parameters (``{"name": "etl"}``); ``outcome``: the HTTP status;
  the request id (``X-Request-ID``) and the duration.

Never a body, a query string or a header. Entries go on a bounded queue
(:data:`QUEUE_SIZE`); a writer task (:func:`start`) inserts them in batches through a
thread, so the answer never waits for the database. A burst beyond the queue drops
entries: they are counted (``app.state.audit.dropped``) and logged, never buffered
without bound.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import re
import time
from datetime import UTC, datetime
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mimir.core.runstore.audit import AuditLog

__all__ = ["QUEUE_SIZE", "AuditMiddleware", "AuditWriter", "action_name", "actor_of", "start"]

logger = logging.getLogger(__name__)

#: Entries waiting for the writer at most; beyond, new ones are dropped (and counted).
QUEUE_SIZE = 10_000
#: Entries written per transaction at most.
BATCH = 500
MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_VERBS = {"POST": "create", "PUT": "update", "PATCH": "update", "DELETE": "delete"}
_PARAM = re.compile(r"^\{[^}]+\}$")
#: A literal last segment of these is an action of its own on the collection
#: (``POST /api/v1/pipelines/execute`` is ``pipelines.execute``, not a creation).
_COLLECTION_ACTIONS = frozenset(
    {"execute", "validate", "enqueue", "import", "upload", "query", "update", "sparql", "scale"}
)
#: A literal after an id that is a verb (``.../{job_id}/cancel``); any other literal there
#: is a sub-collection (``POST /api/v1/twins/{twin_id}/runs`` is ``twins.runs.create``).
_ID_ACTIONS = frozenset(
    {
        "cancel", "retry", "ack", "pause", "resume", "run-now", "trigger", "rotate", "drain",
        "enable", "disable", "test", "restart", "stop", "start", "scale", "resolve",
    }
)  # fmt: skip
#: POSTs that only read (a check, a query): not audited.
READ_ONLY = frozenset({("POST", "/api/v1/pipelines/validate"), ("POST", "/api/v1/kg/query")})


def action_name(method: str, template: str) -> str:
    """A readable action for a route: ``{resource}.{verb}`` from the route template."""
    parts = [p for p in template.split("/") if p]
    if parts[:2] == ["api", "v1"]:
        parts = parts[2:]
    literals = [p for p in parts if not _PARAM.match(p)]
    if literals == ["hooks"]:
        return "hooks.deliver"
    if not literals:
        return f"{method.lower()} {template}"
    last = parts[-1]
    if not _PARAM.match(last) and (
        (len(parts) > 1 and _PARAM.match(parts[-2]) and last in _ID_ACTIONS)
        or last in _COLLECTION_ACTIONS
    ):
        # A verb after an id (``.../{job_id}/cancel``) or on a collection (``.../execute``).
        return ".".join(literals)
    return ".".join([*literals, _VERBS.get(method, method.lower())])


def _token_presented(scope: Scope) -> bool:
    app = scope.get("app")
    settings = getattr(getattr(app, "state", None), "settings", None)
    token = getattr(settings, "api_token", None)
    if not token:
        return False
    header = dict(scope.get("headers") or []).get(b"authorization", b"")
    scheme, _, given = header.partition(b" ")
    return scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), token.encode())


def actor_of(scope: Scope) -> str:
    """Who made the call: ``token``, ``key:<name>`` (an API key), ``trigger:<id>``,
    ``local`` or the client address."""
    path = str(scope.get("path", ""))
    if path.startswith("/api/v1/hooks/"):
        trigger = path[len("/api/v1/hooks/") :].split("/", 1)[0]
        return f"trigger:{trigger[:64]}"
    identity = scope.get("mimir.identity")  # set by mimir.server.auth.AuthMiddleware
    actor = getattr(identity, "actor", None)
    if actor and actor != "local":
        return str(actor)[:200]
    if _token_presented(scope):
        return "token"
    client = scope.get("client")
    host = str(client[0]) if client else ""
    try:
        if ipaddress.ip_address(host).is_loopback:
            return "local"
    except ValueError:
        if host in {"localhost", "testclient", ""}:
            return "local"
    return host[:200]


def _template(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return str(path) if path else str(scope.get("path", ""))[:500]


class AuditWriter:
    """The bounded queue and the task that writes it to the database in batches."""

    def __init__(self, log: AuditLog) -> None:
        self.log = log
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(QUEUE_SIZE)
        self.dropped = 0
        self.written = 0
        self._dropped_logged = 0
        self._last_drop_log = 0.0

    def put(self, entry: dict[str, Any]) -> None:
        try:
            self.queue.put_nowait(entry)
        except asyncio.QueueFull:
            self.dropped += 1
            now = time.monotonic()
            if now - self._last_drop_log > 10:
                self._last_drop_log = now
                logger.warning(
                    "audit: %d entries dropped so far (writer behind; queue of %d full)",
                    self.dropped,
                    QUEUE_SIZE,
                )

    async def run(self) -> None:
        try:
            while True:
                batch = [await self.queue.get()]
                while len(batch) < BATCH and not self.queue.empty():
                    batch.append(self.queue.get_nowait())
                await self._write(batch)
        finally:
            rest = []
            while not self.queue.empty():
                rest.append(self.queue.get_nowait())
            if rest:  # at shutdown: what is queued is written before the database closes
                await asyncio.shield(self._write(rest))
            if self.dropped:
                logger.warning("audit: %d entries were dropped in all", self.dropped)

    async def _write(self, batch: list[dict[str, Any]]) -> None:
        for attempt in range(3):
            try:
                self.written += await asyncio.to_thread(self.log.write, batch)
                return
            except Exception as exc:
                if attempt == 2:
                    self.dropped += len(batch)
                    logger.error(
                        "audit: %d entries lost, the database refused: %s", len(batch), exc
                    )
                    return
                await asyncio.sleep(0.5 * (attempt + 1))


class AuditMiddleware:
    """Queues an audit entry for every mutating call under ``/api/v1``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] not in MUTATING
            or not str(scope.get("path", "")).startswith("/api/v1/")
            or (scope["method"], scope.get("path")) in READ_ONLY
        ):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        at = datetime.now(UTC)
        outcome = 500

        async def send_noting(message: Message) -> None:
            nonlocal outcome
            if message["type"] == "http.response.start":
                outcome = int(message["status"])
            await send(message)

        # A route may add to the target (a new key's id and name): one dict, shared with
        # the copies of the scope that routing makes.
        scope["mimir.audit_target"] = {}
        try:
            await self.app(scope, receive, send_noting)
        finally:
            self._record(scope, at, outcome, started)

    def _record(self, scope: Scope, at: datetime, outcome: int, started: float) -> None:
        app = scope.get("app")
        writer: AuditWriter | None = getattr(getattr(app, "state", None), "audit", None)
        if writer is None:
            return
        template = _template(scope)
        params = scope.get("path_params") or {}
        writer.put(
            {
                "at": at,
                "actor": actor_of(scope),
                "action": action_name(scope["method"], template)[:200],
                "method": scope["method"],
                "route": template[:500],
                "target": {
                    **{str(k): str(v)[:500] for k, v in params.items()},
                    # What a route adds of its own (a new key's id and name, never a secret).
                    **(scope.get("mimir.audit_target") or {}),
                },
                "outcome": outcome,
                "request_id": str((scope.get("state") or {}).get("request_id") or "")[:64] or None,
                "duration_ms": round((time.perf_counter() - started) * 1000, 2),
            }
        )


async def start(app: Any) -> list[asyncio.Task[None]]:
    """Start the audit writer (the middleware drops nothing but counts when it is absent)."""
    writer = AuditWriter(AuditLog(app.state.db))
    app.state.audit = writer
    return [asyncio.create_task(writer.run(), name="audit-writer")]
