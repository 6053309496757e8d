"""The OpenAPI document is valid OpenAPI 3.1 and says what the server answers; OPTIONS,
HEAD and 405 answer as RFC 9110 asks. (The whole API is fuzzed against the document in
test_openapi_fuzz.py; these are the fast, in-process checks.)"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from hypothesis import given, settings
from hypothesis import strategies as st
from openapi_spec_validator import validate

from mimir.core.durations import parse_duration
from mimir.core.settings import Settings
from mimir.server.app import create_app, make_redis
from mimir.server.openapi import ROUTES, ErrorBody, ValidationErrorBody
from mimir.server.routes.queue import MAX_WAIT, WAIT_TIMEOUT_PATTERN
from tests.helpers import free_port

METHODS = {"get", "put", "post", "delete", "patch", "options", "head", "trace"}
TOKEN = "t0ken"


def make_app(tmp_path: Path, token: str | None = None) -> FastAPI:
    return create_app(
        Settings(
            data_dir=tmp_path / "data",
            pipelines_dir=tmp_path / "pipelines",
            # Nothing listens there: routes that need Redis fail fast.
            redis_url=f"redis://127.0.0.1:{free_port()}/0",
            api_token=token,
        )
    )


def operations(document: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method in METHODS:
                yield f"{method.upper()} {path}", operation


class Client:
    """Requests to ``app`` in process, each with a Redis client of its own (the lifespan,
    which makes the app's, does not run here)."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        async def call() -> httpx.Response:
            self.app.state.redis = make_redis(self.app.state.settings)
            transport = httpx.ASGITransport(app=self.app)
            try:
                async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
                    return await http.request(method, url, **kwargs)
            finally:
                await self.app.state.redis.aclose()

        return asyncio.run(call())

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def head(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("HEAD", url, **kwargs)

    def options(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("OPTIONS", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)

    def patch(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("PATCH", url, **kwargs)


@pytest.fixture
def client(tmp_path: Path) -> Client:
    return Client(make_app(tmp_path))


@pytest.mark.parametrize("token", [None, TOKEN], ids=["no-token", "token"])
def test_document_is_valid_openapi(tmp_path: Path, token: str | None) -> None:
    document = make_app(tmp_path, token).openapi()
    validate(document)  # raises with the path of the first problem
    assert document["openapi"].startswith("3.1")


def test_every_operation_says_what_it_answers(tmp_path: Path) -> None:
    document = make_app(tmp_path).openapi()
    found = dict(operations(document))
    assert set(found) == set(ROUTES), "ROUTES in mimir.server.openapi must list every operation"
    text = str(document)
    assert "HTTPValidationError" not in text, "FastAPI's 422 shape is never sent"
    for key, operation in found.items():
        responses = operation["responses"]
        assert any(code.startswith("2") for code in responses), key
        errors = {code: answer for code, answer in responses.items() if code[0] in "45"}
        for code, answer in errors.items():
            schema = answer["content"]["application/json"]["schema"]["$ref"]
            expected = "ValidationErrorBody" if code == "422" else "ErrorBody"
            assert schema == f"#/components/schemas/{expected}", (key, code)
        if operation.get("parameters") or operation.get("requestBody"):
            assert "422" in responses, key
        if "requestBody" in operation:
            assert "413" in responses, key
        for status in ROUTES[key].errors:
            assert str(status) in responses, (key, status)
    # A sample of what each kind of route answers:
    assert {"404", "409", "503"} <= set(
        found["POST /api/v1/queue/jobs/{job_id}/cancel"]["responses"]
    )
    assert {"400", "404", "422", "504"} <= set(found["POST /api/v1/pipelines/execute"]["responses"])
    assert "503" not in found["GET /health"]["responses"]  # it answers "redis": "unavailable"
    assert "503" in found["GET /ready"]["responses"]


def test_token_is_declared_and_401_documented(tmp_path: Path) -> None:
    document = make_app(tmp_path, TOKEN).openapi()
    assert document["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    assert document["security"] == [{"bearerAuth": []}]
    for key, operation in operations(document):
        if key in ("GET /health", "GET /ready"):
            assert operation["security"] == [] and "401" not in operation["responses"]
        else:
            assert "WWW-Authenticate" in operation["responses"]["401"]["headers"], key
    assert "401" not in str(make_app(tmp_path).openapi()["paths"]["/api/v1/plugins"])


def test_success_statuses_media_types_and_constraints(tmp_path: Path) -> None:
    paths = make_app(tmp_path).openapi()["paths"]
    runs = paths["/api/v1/twins/{twin_id}/runs"]["post"]["responses"]
    assert {"201", "202"} <= set(runs) and "200" not in runs
    assert runs["202"]["content"] == runs["201"]["content"]
    assert {"200", "201"} <= set(paths["/api/v1/pipelines/{name}"]["put"]["responses"])
    assert list(paths["/metrics"]["get"]["responses"]["200"]["content"]) == ["text/plain"]
    assert list(paths["/api/v1/events"]["get"]["responses"]["200"]["content"]) == [
        "text/event-stream"
    ]
    name = paths["/api/v1/pipelines/{name}"]["get"]["parameters"][0]
    assert name["name"] == "name" and name["schema"]["pattern"].startswith("^[A-Za-z0-9]")
    upload = paths["/api/v1/ontologies"]["post"]["requestBody"]["content"]
    assert {"application/json", "text/turtle", "application/ld+json"} <= set(upload)


def test_links_lead_to_real_operations_and_parameters(tmp_path: Path) -> None:
    document = make_app(tmp_path).openapi()
    by_id = {operation["operationId"]: operation for _, operation in operations(document)}
    seen = 0
    for key, operation in operations(document):
        for code, answer in operation["responses"].items():
            for name, link in answer.get("links", {}).items():
                seen += 1
                target = by_id[link["operationId"]]
                names = {f"path.{p['name']}" for p in target["parameters"] if p["in"] == "path"}
                assert set(link["parameters"]) == names, (key, code, name)
    assert seen >= 20


def test_ontology_name_pattern_is_the_stores() -> None:
    from mimir.core.ontology.store import _NAME_RE
    from mimir.server.routes.ontologies import NAME_PATTERN

    assert _NAME_RE.pattern == NAME_PATTERN


@settings(max_examples=300, deadline=None)
@given(st.from_regex(WAIT_TIMEOUT_PATTERN.replace("$", r"\Z"), fullmatch=True))
def test_every_documented_wait_timeout_is_accepted(timeout: str) -> None:
    assert 0 <= parse_duration(timeout) <= MAX_WAIT


@pytest.mark.parametrize("value", ["", "1x", "2h", "61m", "1000", "-1s", "1h1s", "5s\n"])
def test_wait_timeout_pattern_refuses(value: str) -> None:
    assert not re.search(WAIT_TIMEOUT_PATTERN.replace("$", r"\Z"), value)


# -- error bodies ---------------------------------------------------------------------


def test_error_answers_have_the_documented_shape(client: Client) -> None:
    invalid = client.post("/api/v1/pipelines", json={"yaml": ""})
    assert invalid.status_code == 422
    body = ValidationErrorBody.model_validate(invalid.json())
    assert isinstance(body.detail, list) and body.detail[0].field == "yaml"
    pipeline = client.post("/api/v1/pipelines/validate", json={})
    assert pipeline.status_code == 422
    assert ValidationErrorBody.model_validate(pipeline.json()).detail is not None
    for answer in (
        client.get("/api/v1/pipelines/nope"),  # 404
        client.post(
            "/api/v1/pipelines", content=b"{", headers={"content-type": "application/json"}
        ),
        client.patch("/api/v1/plugins"),  # 405
    ):
        assert answer.status_code >= 400
        ErrorBody.model_validate(answer.json())


# -- OPTIONS, HEAD, 405 ---------------------------------------------------------------


def test_options_lists_every_method_of_the_path(client: Client) -> None:
    answer = client.options("/api/v1/pipelines/some-name")
    assert answer.status_code == 204 and answer.content == b""
    assert answer.headers["allow"] == "GET, HEAD, PUT, DELETE, OPTIONS"
    assert client.options("/api/v1/twins").headers["allow"] == "GET, HEAD, POST, OPTIONS"
    assert client.options("/api/v1/kg/sparql").headers["allow"] == "GET, HEAD, POST, OPTIONS"
    assert client.options("/no/such/path").status_code == 404


def test_405_allow_lists_every_method_of_the_path(client: Client) -> None:
    # Starlette listed the methods of the first matching route alone ("GET").
    answer = client.patch("/api/v1/twins")
    assert answer.status_code == 405
    assert answer.headers["allow"] == "GET, HEAD, POST, OPTIONS"
    assert answer.json()["error"] == "method PATCH not allowed on /api/v1/twins"


def test_a_concrete_path_is_not_served_by_a_template(client: Client) -> None:
    # GET /api/v1/pipelines/execute is not GET /api/v1/pipelines/{name}.
    answer = client.get("/api/v1/pipelines/execute")
    assert answer.status_code == 405
    assert answer.headers["allow"] == "POST, OPTIONS"
    assert client.options("/api/v1/pipelines/validate").headers["allow"] == "POST, OPTIONS"


def test_head_answers_gets_headers_without_a_body(client: Client) -> None:
    get = client.get("/api/v1/plugins")
    head = client.head("/api/v1/plugins")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == get.headers["content-length"]
    assert head.headers["content-type"] == "application/json"
    # The never-ending event stream: the headers, then it stops.
    stream = client.head("/api/v1/events")
    assert stream.status_code == 200
    assert stream.headers["content-type"].startswith("text/event-stream")
    assert client.head("/api/v1/pipelines/execute").status_code == 405


def test_options_and_head_need_the_token(tmp_path: Path) -> None:
    client = Client(make_app(tmp_path, TOKEN))
    assert client.options("/api/v1/twins").status_code == 401
    assert client.head("/api/v1/plugins").status_code == 401
    allowed = client.options("/api/v1/twins", headers={"Authorization": f"Bearer {TOKEN}"})
    assert allowed.status_code == 204
