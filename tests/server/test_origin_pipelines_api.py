"""The original Go platform's files through a real server: the seed's execute call runs its
``test_pipeline.yaml`` unchanged (its URL mapped to a local stand-in by
``MIMIR_HTTP_REWRITE``), and validation answers say how such files are read."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.core.plugin_harness import Recorded, StubServer, stub_server
from tests.helpers import RedisServer, ServerProcess

ORIGIN = Path(__file__).resolve().parents[1] / "data" / "origin"
SEED_BODY = '{"pipeline_file": "test_pipeline.yaml", "context": {"input": "test data"}}'
HTTPBIN = {"args": {}, "headers": {"Host": "httpbin.org"}, "url": "https://httpbin.org/get"}


@pytest.fixture
def httpbin() -> Iterator[StubServer]:
    """A local stand-in for https://httpbin.org (a process apart from the API server, whose
    own port the outbound policy refuses)."""

    def answer(request: Recorded) -> tuple[int, dict[str, str], Any]:
        return (200, {}, HTTPBIN) if request.path == "/get" else (404, {}, {"error": "no"})

    with stub_server() as stub:
        stub.respond = answer
        yield stub


@pytest.fixture
def origin_client(
    make_server: Callable[..., ServerProcess],
    redis_server: RedisServer,
    pipelines_dir: Path,
    httpbin: StubServer,
) -> Iterator[httpx.Client]:
    # The original's file, unchanged, where the seed's call looks for it.
    shutil.copy(ORIGIN / "test_pipeline.yaml", pipelines_dir / "test_pipeline.yaml")
    server = make_server(
        redis_url=redis_server.url, MIMIR_HTTP_REWRITE=f"https://httpbin.org={httpbin.base_url}"
    ).start()
    with httpx.Client(base_url=server.base_url, timeout=30.0) as client:
        yield client


def test_the_originals_test_pipeline_runs_through_the_seeds_execute_call(
    origin_client: httpx.Client, pipelines_dir: Path, httpbin: StubServer
) -> None:
    assert (pipelines_dir / "test_pipeline.yaml").read_bytes() == (
        ORIGIN / "test_pipeline.yaml"
    ).read_bytes()
    answer = origin_client.post(
        "/api/v1/pipelines/execute",
        content=SEED_BODY,
        headers={"Content-Type": "application/json"},
    )
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert result["success"] is True, result["error"]
    assert result["pipeline"] == "Test Pipeline"
    assert [s["name"] for s in result["steps"]] == ["Test API Call", "Generate HTML Report"]
    api = result["context"]["api_result"]
    assert api["status_code"] == api["status"] == 200
    assert api["body"] == HTTPBIN and api["url"] == f"{httpbin.base_url}/get"
    report = result["context"]["html_report"]
    assert report["format"] == "html" and report["generated"] is True
    assert "<title>Test Report</title>" in report["html"] and "test data" in report["html"]
    assert [(r.method, r.path) for r in httpbin.requests] == [("GET", "/get")]


def test_validation_answers_carry_warnings_and_notes(origin_client: httpx.Client) -> None:
    echo = (ORIGIN / "test_pipelines" / "json_echo_test.yaml").read_text()
    report = origin_client.post("/api/v1/pipelines/validate", json={"yaml": echo}).json()
    assert report["valid"] is True and report["errors"] == []
    assert [n["field"] for n in report["notes"]] == ["config.input", "config.pretty_print"]
    assert "read as the context key 'json_data'" in report["notes"][0]["message"]

    demo = (ORIGIN / "test_pipelines" / "storage_demo.yaml").read_text()
    lenient = origin_client.post("/api/v1/pipelines/validate", json={"yaml": demo}).json()
    assert lenient["valid"] is False
    assert {e["message"].split(":")[0] for e in lenient["errors"]} == {
        "unknown plugin 'Storage.vector'"
    }
    assert [w["field"] for w in lenient["warnings"]] == ["expected_outputs"]
    strict = origin_client.post(
        "/api/v1/pipelines/validate", params={"strict": "true"}, json={"yaml": demo}
    ).json()
    assert strict["errors"][0]["message"] == "unknown field 'expected_outputs'"
    assert strict["warnings"] == []

    bare = "name: b\nsteps:\n  - {name: w, plugin: Output.json, config: {input: order}}\n"
    told = origin_client.post(
        "/api/v1/pipelines/validate", json={"yaml": bare, "context": {"order": 1}}
    ).json()
    assert told["warnings"] == [] and "given in the context" in told["notes"][0]["message"]


def test_create_and_replace_accept_strict(origin_client: httpx.Client) -> None:
    text = (
        "name: extra\nexpected_results: {}\nsteps:\n"
        "  - {name: s, plugin: Debug.echo, config: {value: 1}}\n"
    )
    refused = origin_client.post(
        "/api/v1/pipelines", params={"strict": "true"}, json={"yaml": text}
    )
    assert refused.status_code == 422 and "unknown field 'expected_results'" in refused.text
    created = origin_client.post("/api/v1/pipelines", json={"yaml": text})
    assert created.status_code == 201, created.text
    assert [w["field"] for w in created.json()["warnings"]] == ["expected_results"]
    replaced = origin_client.put(
        "/api/v1/pipelines/extra", params={"strict": "true"}, json={"yaml": text}
    )
    assert replaced.status_code == 422
    fetched = origin_client.get("/api/v1/pipelines/extra").json()
    assert fetched["valid"] is True and fetched["warnings"][0]["field"] == "expected_results"
