"""The access log: one line per request, polling kept out of INFO."""

from __future__ import annotations

import asyncio
import logging

import pytest
from starlette.types import Receive, Scope, Send

from mimir.server.middleware import RequestLogMiddleware


def _answering(status: int):  # type: ignore[no-untyped-def]
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    return app


def _call(status: int, method: str, path: str, headers: list[tuple[bytes, bytes]]) -> None:
    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, object]) -> None:
        return None

    scope = {"type": "http", "method": method, "path": path, "headers": headers}
    asyncio.run(RequestLogMiddleware(_answering(status))(scope, receive, send))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("status", "method", "path", "marked", "level"),
    [
        (200, "GET", "/api/v1/queue/status", True, logging.DEBUG),
        (200, "GET", "/api/v1/workers", True, logging.DEBUG),
        (200, "GET", "/api/v1/queue/status", False, logging.INFO),  # an operator's curl
        (200, "POST", "/api/v1/queue/jobs/x/cancel", True, logging.INFO),  # never a change
        (503, "GET", "/api/v1/queue/status", True, logging.INFO),  # failures always show
        (200, "GET", "/health", False, logging.DEBUG),
    ],
)
def test_the_consoles_polling_is_logged_at_debug(
    caplog: pytest.LogCaptureFixture, status: int, method: str, path: str, marked: bool, level: int
) -> None:
    """Issue 13: a console left open filled the server's log with its own polling."""
    headers = [(b"x-mimir-poll", b"1")] if marked else []
    with caplog.at_level(logging.DEBUG, logger="mimir.server.access"):
        _call(status, method, path, headers)
    [record] = [r for r in caplog.records if r.name == "mimir.server.access"]
    assert record.levelno == level and path in record.getMessage()
