"""Every pipeline file of the original Go platform (tests/data/origin, copied from its
distributed branch) either validates and runs here with the original's meaning, against
local stand-ins for outside services, or fails validation naming what exists nowhere."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mimir.core.engine import PipelineResult, execute_pipeline
from mimir.core.errors import PipelineValidationError
from mimir.core.outbound import default_outbound_policy
from mimir.core.pipeline import load_pipeline
from tests.core.plugin_harness import Recorded, stub_server

ORIGIN = Path(__file__).resolve().parents[1] / "data" / "origin"
FILES = sorted(
    path.relative_to(ORIGIN).as_posix()
    for path in ORIGIN.rglob("*.yaml")
    if "schema" not in path.parts
)


@pytest.fixture
def rewrite(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str, str], None]]:
    """Set MIMIR_HTTP_REWRITE for this test (the process's outbound policy is rebuilt)."""

    def set_rule(source: str, target: str) -> None:
        monkeypatch.setenv("MIMIR_HTTP_REWRITE", f"{source}={target}")
        default_outbound_policy.cache_clear()

    yield set_rule
    monkeypatch.delenv("MIMIR_HTTP_REWRITE", raising=False)
    default_outbound_policy.cache_clear()


def _run(name: str, data_dir: Path, context: dict[str, Any] | None = None) -> PipelineResult:
    pipeline = load_pipeline(ORIGIN / name)
    result = asyncio.run(execute_pipeline(pipeline, context or {}, data_dir=data_dir))
    assert result.success, result.error
    return result


def _httpbin(request: Recorded) -> tuple[int, dict[str, str], Any]:
    return (
        200,
        {},
        {"args": {}, "headers": {"Host": "httpbin.org"}, "url": "https://httpbin.org/get"},
    )


def _chat(request: Recorded) -> tuple[int, dict[str, str], Any]:
    last = request.json()["messages"][-1]["content"]
    return 200, {}, {
        "model": "gpt-3.5-turbo",
        "choices": [{"message": {"role": "assistant", "content": f"reply to: {last}"},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
    }  # fmt: skip


def runs_test_pipeline(data_dir: Path, rewrite: Callable[[str, str], None]) -> None:
    with stub_server() as stub:
        stub.respond = _httpbin
        rewrite("https://httpbin.org", stub.base_url)
        result = _run("test_pipeline.yaml", data_dir)
    assert [r.path for r in stub.requests] == ["/get"]
    api = result.context["api_result"]
    # The original's result fields and this project's own.
    assert api["status_code"] == api["status"] == 200
    assert api["body"] == api["json"] == _httpbin(stub.requests[0])[2]
    report = result.context["html_report"]
    assert report["format"] == "html" and report["generated"] is True
    # With nothing but a title, the page shows the context: the API call's result.
    assert "Test Report" in report["html"] and "api_result" in report["html"]


def runs_json_echo(data_dir: Path, rewrite: Callable[[str, str], None]) -> None:
    result = _run("test_pipelines/json_echo_test.yaml", data_dir)
    data = {"message": "Hello from pipeline!", "count": 42, "items": ["apple", "banana", "cherry"]}
    assert result.context["json_data"] == data
    written = result.context["write_result"]
    # The data itself, not the text "json_data" (issue 17), pretty-printed as asked.
    assert json.loads(written["json_string"]) == data
    assert written["json_string"].startswith('{\n  "message"')
    assert written["success"] is True


def runs_llm_chain(
    data_dir: Path, rewrite: Callable[[str, str], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-stand-in")
    for name in ("MIMIR_AI_BASE_URL", "OPENAI_BASE_URL", "MIMIR_AI_API_KEY", "MIMIR_AI_MODEL"):
        monkeypatch.delenv(name, raising=False)
    with stub_server() as stub:
        stub.respond = _chat
        rewrite("https://api.openai.com", stub.base_url)
        result = _run("test_pipelines/llm_chain_example.yaml", data_dir)
    assert [r.path for r in stub.requests] == ["/v1/chat/completions"] * 3
    assert stub.requests[0].headers["authorization"] == "Bearer sk-stand-in"
    first, second, third = (r.json() for r in stub.requests)
    assert first["model"] == "gpt-3.5-turbo" and first["max_tokens"] == 200
    # '{{.initial_content.content}}' reads the first reply's text.
    initial = "reply to: Write a brief explanation of quantum computing for beginners."
    assert second["messages"][-1]["content"] == f"Please summarize: {initial}"
    assert third["messages"][-1]["content"] == (
        f"Refine this summary: reply to: Please summarize: {initial}"
    )
    # 'input: refined_summary' names the last reply, written as it is (a mapping).
    saved = json.loads((data_dir / "output" / "llm_chain_result.json").read_text())
    assert saved["text"] == "reply to: " + third["messages"][-1]["content"]
    assert saved["usage"]["total_tokens"] == 7
    assert result.context["final_result"]["file_path"] == "output/llm_chain_result.json"


#: What each file does here: a runner, or the texts its validation errors must contain.
OUTCOMES: dict[str, Any] = {
    "test_pipeline.yaml": runs_test_pipeline,
    "test_pipelines/json_echo_test.yaml": runs_json_echo,
    "test_pipelines/llm_chain_example.yaml": runs_llm_chain,
    "test_data/basic_pipeline.yaml": [
        "'ontology_validation'",
        "'data_transformer'",
    ],
    "test_pipelines/agentic_workflow_example.yaml": [
        "operation 'extract_pattern' exists nowhere",
        "unknown config key 'pattern' for Data_Processing.transform",
    ],
    "test_pipelines/storage_basic_test.yaml": ["unknown plugin 'Storage.vector'"] * 6,
    "test_pipelines/storage_demo.yaml": ["unknown plugin 'Storage.vector'"] * 7,
    "test_pipelines/storage_cross_pipeline_test.yaml": ["no top-level 'steps'"],
}


def test_every_origin_file_has_an_expected_outcome() -> None:
    assert sorted(OUTCOMES) == FILES
    assert len(FILES) == 8


@pytest.mark.parametrize("name", FILES)
def test_origin_file_runs_or_fails_naming_what_exists_nowhere(
    name: str,
    data_dir: Path,
    rewrite: Callable[[str, str], None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    outcome = OUTCOMES[name]
    if callable(outcome):
        arguments = [data_dir, rewrite]
        if "monkeypatch" in outcome.__code__.co_varnames:
            arguments.append(monkeypatch)
        outcome(*arguments)
        return
    with pytest.raises(PipelineValidationError) as caught:
        load_pipeline(ORIGIN / name)
    messages = [str(issue) for issue in caught.value.errors]
    assert len(messages) == len(outcome), messages
    for expected, message in zip(outcome, messages, strict=True):
        assert expected in message


def test_the_ignored_pipelines_of_a_file_are_named_with_their_missing_plugins() -> None:
    with pytest.raises(PipelineValidationError) as caught:
        load_pipeline(ORIGIN / "test_pipelines" / "storage_cross_pipeline_test.yaml")
    warnings = {w.field: w.message for w in caught.value.warnings}
    assert set(warnings) == {
        "data_collection_pipeline",
        "query_pipeline",
        "analytics_pipeline",
        "test_scenarios",
    }
    assert "Data_Processing.analyze, Storage.vector exist nowhere" in warnings["analytics_pipeline"]


def test_the_original_files_notes_say_how_they_are_read() -> None:
    echo = load_pipeline(ORIGIN / "test_pipelines" / "json_echo_test.yaml")
    assert [(n.step_index, n.field) for n in echo.notes] == [
        (2, "config.input"),
        (2, "config.pretty_print"),
    ]
    assert "'json_data' is read as the context key 'json_data'" in echo.notes[0].message
    chain = load_pipeline(ORIGIN / "test_pipelines" / "llm_chain_example.yaml")
    said = " ".join(n.message for n in chain.notes)
    assert "plugin 'AIModels.openai' is 'AI.openai' here" in said
    assert "'operation: chat'" in said and "Go-template" in said
    with pytest.raises(PipelineValidationError) as basic:
        load_pipeline(ORIGIN / "test_data" / "basic_pipeline.yaml")
    assert {w.field for w in basic.value.warnings} == {"input", "output"}


def test_strict_mode_refuses_the_fields_the_original_ignored() -> None:
    # The files that run use no field the pipeline model does not know.
    load_pipeline(ORIGIN / "test_pipelines" / "json_echo_test.yaml", strict=True)
    with pytest.raises(PipelineValidationError) as caught:
        load_pipeline(ORIGIN / "test_pipelines" / "storage_demo.yaml", strict=True)
    first = caught.value.errors[0]
    assert (first.field, first.line) == ("expected_outputs", 80)
    assert first.message == "unknown field 'expected_outputs'"
