"""Domain errors answer their status and detail from one table; unexpected errors, and
Redis failing a command, answer a JSON 500 with a request id, logged, no traceback sent."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import httpx
import pytest
import redis
from fastapi import APIRouter, FastAPI

from mimir.core.errors import (
    ExecutionTimeoutError,
    LimitExceededError,
    MimirError,
    OutboundRefusedError,
    PathEscapeError,
    PipelineExistsError,
    PipelineNotFoundError,
    TemplateError,
    UnknownPluginError,
)
from mimir.core.ontology import (
    EndpointError,
    FederationRefusedError,
    OntologyError,
    OntologyExistsError,
    OntologyNotFoundError,
    QueryTimeoutError,
    RdfParseError,
    SparqlError,
    StoreBusyError,
    UnsupportedFormatError,
)
from mimir.core.pipeline.requests import InvalidPipelineRequestError
from mimir.core.queue import (
    JobNotFoundError,
    JobStateError,
    QueueCommandError,
    QueueError,
    QueueKeys,
    QueueUnavailableError,
)
from mimir.core.settings import Settings
from mimir.core.twin import TwinError
from mimir.core.twin.store import ScenarioExistsError, TwinNotFoundError
from mimir.server.app import create_app
from tests.helpers import RedisServer, ServerProcess

REFUSED = FederationRefusedError(
    "SERVICE refused",
    refused=[{"keyword": "SERVICE", "iri": "http://x/", "host": "x", "reason": "off"}],
)
#: (error raised by a route, status, detail) as the API has answered them all along.
ANSWERS = [
    (MimirError("m"), 400, None),
    (InvalidPipelineRequestError("m"), 422, None),
    (UnknownPluginError("Input.nope", ["Input.json"]), 422,
     {"plugin": "Input.nope", "suggestions": ["Input.json"]}),
    (OutboundRefusedError("m"), 422, None),
    (TemplateError("m"), 422, None),
    (PipelineNotFoundError("m"), 404, None),
    (PipelineExistsError("m"), 409, None),
    (PathEscapeError("m"), 400, None),
    (LimitExceededError("m"), 422, None),
    (ExecutionTimeoutError("m"), 504, None),
    (JobNotFoundError("j1"), 404, None),
    (JobStateError("m"), 409, None),
    (QueueUnavailableError("m"), 503, None),
    (QueueError("m"), 400, None),
    (OntologyNotFoundError("m"), 404, None),
    (OntologyExistsError("m"), 409, None),
    (RdfParseError("m", 3, 7), 422, {"line": 3, "column": 7}),
    (UnsupportedFormatError("m"), 415, None),
    (REFUSED, 403, {"federation": "off", "refused": REFUSED.refused}),
    (QueryTimeoutError("m"), 504, None),
    (SparqlError("m"), 400, None),
    (OntologyError("m"), 400, None),
    (EndpointError("m"), 503, None),
    (StoreBusyError("m"), 503, None),
    (TwinNotFoundError("m"), 404, None),
    (ScenarioExistsError("m"), 409, None),
    (TwinError("m"), 422, None),
]  # fmt: skip


def _call(app: FastAPI, path: str) -> httpx.Response:
    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.get(path, headers={"X-Request-ID": "req-42"})

    return asyncio.run(call())


@pytest.mark.parametrize(
    ("error", "status", "detail"), ANSWERS, ids=[type(a[0]).__name__ for a in ANSWERS]
)
def test_each_domain_error_has_its_answer(
    tmp_path: Path, error: Exception, status: int, detail: object
) -> None:
    app = create_app(Settings(data_dir=tmp_path / "d", pipelines_dir=tmp_path / "p"))
    router = APIRouter()

    @router.get("/api/v1/fail")
    async def fail() -> None:
        raise error

    app.include_router(router)
    answer = _call(app, "/api/v1/fail")
    assert (answer.status_code, answer.json()) == (status, {"error": str(error), "detail": detail})


def test_redis_failing_a_command_is_a_logged_500(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(Settings(data_dir=tmp_path / "d", pipelines_dir=tmp_path / "p"))
    router = APIRouter()

    @router.get("/api/v1/fail")
    async def fail() -> None:
        raise QueueCommandError("cannot read the job: Redis error: user_script:1: oops")

    app.include_router(router)
    with caplog.at_level(logging.ERROR):
        answer = _call(app, "/api/v1/fail")
    assert answer.status_code == 500
    assert answer.json() == {"error": "internal error", "detail": None, "request_id": "req-42"}
    assert "oops" not in answer.text
    assert any("req-42" in r.getMessage() and r.exc_info for r in caplog.records), caplog.text


def test_a_wrong_type_key_in_redis_answers_500_not_400(
    api_server: ServerProcess, redis_server: RedisServer
) -> None:
    # A job record that is not a hash: Redis answers WRONGTYPE, nothing the caller did.
    with redis.Redis.from_url(redis_server.url) as client:
        client.set(QueueKeys("mimir:").job("broken"), "not a hash")
    answer = httpx.get(
        f"{api_server.base_url}/api/v1/queue/jobs/broken",
        headers={"X-Request-ID": "req-wrongtype"},
        timeout=30,
    )
    assert answer.status_code == 500, answer.text
    assert answer.json() == {
        "error": "internal error",
        "detail": None,
        "request_id": "req-wrongtype",
    }
    log = api_server.output(200)
    assert "req-wrongtype" in log and "WRONGTYPE" in log, log


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
