"""Unexpected errors answer a JSON 500 with a request id, logged, with no traceback sent."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import httpx
import pytest
from fastapi import APIRouter

from mimir.core.settings import Settings
from mimir.server.app import create_app


def test_unhandled_exception_is_a_json_500(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(Settings(data_dir=tmp_path / "d", pipelines_dir=tmp_path / "p"))
    crash = APIRouter()

    @crash.get("/api/v1/crash")
    async def crash_route() -> None:
        raise RuntimeError("secret internals")

    app.include_router(crash)

    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.get("/api/v1/crash", headers={"X-Request-ID": "req-42"})

    with caplog.at_level(logging.ERROR):
        answer = asyncio.run(call())
    assert answer.status_code == 500
    assert answer.json() == {"error": "internal error", "detail": None, "request_id": "req-42"}
    assert answer.headers["x-request-id"] == "req-42"
    assert "secret internals" not in answer.text
    assert any("req-42" in record.getMessage() and record.exc_info for record in caplog.records), (
        caplog.text
    )
