"""How files written for the original Go platform read here: bare context keys, the
``pipelines:`` choice, plugin and config-key aliases, result fields by either name."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from mimir.core.engine import PipelineResult, execute_pipeline
from mimir.core.errors import PipelineValidationError
from mimir.core.outbound import OutboundPolicy, UrlRewrite
from mimir.core.pipeline import Pipeline, load_pipeline
from mimir.core.settings import Settings
from tests.core.plugin_harness import StepFailed, run_pipeline, stub_server


def _load(steps: list[dict[str, Any]], **kwargs: Any) -> Pipeline:
    return load_pipeline({"name": "t", "steps": steps}, **kwargs)


def _errors(steps: list[dict[str, Any]], **kwargs: Any) -> list[str]:
    with pytest.raises(PipelineValidationError) as caught:
        _load(steps, **kwargs)
    return [str(issue) for issue in caught.value.errors]


def _run(steps: list[dict[str, Any]], data_dir: Path, context: Any = None) -> PipelineResult:
    result = run_pipeline(steps, data_dir, context)
    assert result.success, result.error
    return result


READ = {
    "name": "read",
    "plugin": "Input.json",
    "config": {"json_string": '{"a": 1}'},
    "output": "json_data",
}


# --------------------------------------------------------------------------- bare keys


def test_a_bare_key_names_an_earlier_output_as_in_the_original(data_dir: Path) -> None:
    write = {
        "name": "write",
        "plugin": "Output.json",
        "config": {"input": "json_data", "file_path": "out.json"},
    }
    pipeline = _load([READ, write])
    (note,) = pipeline.notes
    assert (note.step_index, note.field) == (2, "config.input")
    assert "'json_data' is read as the context key 'json_data'" in note.message
    _run([READ, write], data_dir)
    assert json.loads((data_dir / "out.json").read_text()) == {"a": 1}


def test_a_bare_string_that_names_nothing_stays_text_with_a_warning(data_dir: Path) -> None:
    steps = [{"name": "w", "plugin": "Output.json", "config": {"input": "greeting"}, "output": "o"}]
    (warning,) = _load(steps).warnings
    assert "'greeting' names no earlier step's output: it is used as the text" in warning.message
    assert _run(steps, data_dir).context["o"]["json_string"] == '"greeting"'
    # Text that cannot be a key is not worth a warning.
    sentence = [{"name": "w", "plugin": "Output.json", "config": {"input": "Hello, world"}}]
    assert _load(sentence).warnings == []


def test_a_bare_key_given_only_in_the_jobs_context_is_read_at_run_time(data_dir: Path) -> None:
    steps = [{"name": "w", "plugin": "Output.json", "config": {"input": "order"}, "output": "o"}]
    noted = _load(steps, context_keys={"order"})
    assert noted.warnings == [] and "given in the context" in noted.notes[0].message
    out = _run(steps, data_dir, {"order": {"id": 7}}).context["o"]
    assert json.loads(out["json_string"]) == {"id": 7}


def test_output_json_reads_a_bare_key_as_the_original_saw_the_value(data_dir: Path) -> None:
    (data_dir / "sales.csv").write_text("region,amount\nnorth,10\nsouth,5\n")
    steps = [
        {"name": "list", "plugin": "Debug.echo", "config": {"value": [1, 2]}, "output": "nums"},
        {"name": "csv", "plugin": "Input.csv", "config": {"file_path": "sales.csv"},
         "output": "csv_data"},
        {"name": "a", "plugin": "Output.json", "config": {"input": "nums"}, "output": "a"},
        {"name": "b", "plugin": "Output.json", "config": {"input": "csv_data"}, "output": "b"},
        {"name": "c", "plugin": "Output.json", "config": {"input": "{{ nums }}"}, "output": "c"},
        {"name": "d", "plugin": "Data_Processing.transform",
         "config": {"input": "csv_data", "sort_by": ["amount"]}, "output": "d"},
    ]  # fmt: skip
    context = _run(steps, data_dir).context
    # Not a mapping: the original wrapped it as {"value": ...}; a template passes it as is.
    assert json.loads(context["a"]["json_string"]) == {"value": [1, 2]}
    assert json.loads(context["c"]["json_string"]) == [1, 2]
    # The original's Input.csv result, field for field.
    assert json.loads(context["b"]["json_string"]) == {
        "file_path": "sales.csv",
        "has_headers": True,
        "delimiter": ",",
        "rows": [{"region": "north", "amount": 10}, {"region": "south", "amount": 5}],
        "row_count": 2,
        "columns": ["region", "amount"],
        "column_count": 2,
    }
    # A field without an original counterpart reads the value itself.
    assert [row["region"] for row in context["d"]] == ["south", "north"]


def test_csv_rows_answer_the_originals_field_names_in_templates(data_dir: Path) -> None:
    (data_dir / "s.csv").write_text("a,b\n1,2\n3,4\n")
    steps = [
        {"name": "csv", "plugin": "Input.csv", "config": {"file_path": "s.csv"}, "output": "d"},
        {"name": "e", "plugin": "Debug.echo", "output": "e",
         "config": {"value": "{{ d.row_count }} rows of {{.d.columns}}; first {{ d.0.a }}"}},
    ]  # fmt: skip
    context = _run(steps, data_dir).context
    assert context["e"] == '2 rows of ["a", "b"]; first 1'
    assert context["d"] == [{"a": 1, "b": 2}, {"a": 3, "b": 4}]
    # Without headers the original's rows were objects with columns column_1, column_2 …
    headless = [
        {"name": "csv", "plugin": "Input.csv", "output": "d",
         "config": {"file_path": "s.csv", "has_headers": False}},
        {"name": "e", "plugin": "Debug.echo", "output": "e",
         "config": {"value": ["{{ d.0 }}", "{{ d.rows.0 }}", "{{ d.columns }}"]}},
    ]  # fmt: skip
    assert _run(headless, data_dir).context["e"] == [
        ["a", "b"],
        {"column_1": "a", "column_2": "b"},
        ["column_1", "column_2"],
    ]


def test_only_written_bare_strings_count_not_rendered_templates(data_dir: Path) -> None:
    steps = [
        {"name": "k", "plugin": "Debug.echo", "config": {"value": "secret"}, "output": "key"},
        {"name": "s", "plugin": "Debug.echo", "config": {"value": 1}, "output": "secret"},
        {"name": "w", "plugin": "Output.json", "config": {"input": "{{ key }}"}, "output": "o"},
    ]
    assert _run(steps, data_dir).context["o"]["json_string"] == '"secret"'


def test_a_bare_key_of_a_later_or_disabled_step_is_an_error() -> None:
    later = [
        {"name": "w", "plugin": "Output.json", "config": {"input": "rows"}},
        {"name": "r", "plugin": "Debug.echo", "config": {"value": 1}, "output": "rows"},
    ]
    (error,) = _errors(later)
    assert "'rows' names the output of step 2 'r', which runs later" in error
    disabled = [{**later[1], "enabled": False}, later[0]]
    (error,) = _errors(disabled)
    assert "which is disabled" in error


def test_a_disabled_producer_at_run_time_fails_the_step_not_writes_the_text(
    data_dir: Path,
) -> None:
    # Jobs carry validated definitions; the engine still never falls back to the text.
    steps = [
        {"name": "r", "plugin": "Debug.echo", "config": {"value": 1}, "output": "rows",
         "enabled": False},
        {"name": "w", "plugin": "Output.json", "config": {"input": "rows"}},
    ]  # fmt: skip
    pipeline = Pipeline.model_validate({"name": "t", "steps": steps})
    result = asyncio.run(execute_pipeline(pipeline, {}, data_dir=data_dir))
    assert not result.success
    assert "'rows' names the output of step 1 'r', which is disabled" in (result.error or "")


def test_keys_the_original_set_implicitly_are_errors_that_say_what_to_write() -> None:
    no_output = [{k: v for k, v in READ.items() if k != "output"}]
    write = {"name": "w", "plugin": "Output.json", "config": {"input": "json_data"}}
    (error,) = _errors([*no_output, write])
    assert "'json_data' names nothing here" in error and "add 'output: json_data'" in error
    ai = {"name": "ask", "plugin": "AI.mock", "config": {"prompt": "hi"}, "output": "reply"}
    (error,) = _errors([ai, {**write, "config": {"input": "llm_response"}}])
    assert "the original's AI plugins set 'llm_response'" in error
    assert "'{{ reply.text }}'" in error


def test_ai_replies_answer_the_originals_names_in_templates(data_dir: Path) -> None:
    steps = [
        {"name": "ask", "plugin": "AIModels.mock", "config": {"prompt": "Good news!",
         "task": "complete", "operation": "chat"}, "output": "reply"},
        {"name": "e", "plugin": "Debug.echo", "output": "e",
         "config": {"value": ["{{ reply.llm_response }}", "{{ reply.content }}",
                              "{{ reply.llm_model }}", "{{ reply.llm_usage.total_tokens }}"]}},
    ]  # fmt: skip
    context = _run(steps, data_dir).context
    reply = context["reply"]
    assert context["e"] == [reply["text"], reply["text"], "mock", reply["usage"]["total_tokens"]]
    # The reply itself holds this project's fields only.
    assert "llm_response" not in reply and "llm_response" not in json.dumps(reply)


# --------------------------------------------------------------------------- pipelines:


def _pick(entries: list[dict[str, Any]], **top: Any) -> str:
    step = [{"name": "s", "plugin": "Debug.echo"}]
    document = {**top, "pipelines": [{**e, "steps": step} for e in entries]}
    return load_pipeline(document).name


def test_pipelines_list_choice_follows_the_original() -> None:
    assert _pick([{"name": "a"}, {"name": "b", "enabled": True}]) == "b"
    assert _pick([{"name": "a"}, {"name": "b"}]) == "a"
    assert _pick([{"name": "a", "enabled": False}, {"name": "b", "enabled": True}]) == "b"
    # A top-level name makes the document one pipeline: the list beside it is ignored.
    single = load_pipeline(
        {"name": "top", "steps": [{"name": "s", "plugin": "Debug.echo"}],
         "pipelines": [{"name": "x", "enabled": True, "steps": []}]}
    )  # fmt: skip
    assert single.name == "top"
    assert "unknown field 'pipelines' ignored" in single.warnings[0].message


def test_a_pipelines_choice_the_original_made_differently_is_an_error() -> None:
    with pytest.raises(PipelineValidationError) as caught:
        _pick([{"name": "old", "enabled": False}, {"name": "new"}])
    (issue,) = caught.value.errors
    assert "the original platform ran 'old', this project used to run 'new'" in issue.message
    with pytest.raises(PipelineValidationError) as caught:
        _pick([{"name": "a", "enabled": False}, {"name": "b", "enabled": False}])
    assert "the original platform ran the first ('a') anyway" in caught.value.errors[0].message


# --------------------------------------------------------------------------- aliases


def test_an_aimodels_name_is_its_ai_plugin_or_an_error_naming_both() -> None:
    pipeline = _load([{"name": "a", "plugin": "AIModels.mock", "config": {"prompt": "x"}}])
    assert pipeline.steps[0].plugin == "AI.mock"
    assert pipeline.notes[0].message == "plugin 'AIModels.mock' is 'AI.mock' here"
    (error,) = _errors([{"name": "a", "plugin": "AIModels.azure", "config": {}}])
    assert "unknown plugin 'AIModels.azure'" in error
    assert "the original's AIModels.azure is AI.azure here, which does not exist either" in error
    assert "AI.mock" in error  # what exists instead


def test_the_originals_config_keys_are_read_as_this_projects(data_dir: Path) -> None:
    steps = [
        READ,
        {"name": "w", "plugin": "Output.json",
         "config": {"input": "{{ json_data }}", "filename": "f.json", "pretty": False}},
    ]  # fmt: skip
    pipeline = _load(steps)
    assert pipeline.steps[1].config == {
        "input": "{{ json_data }}",
        "file_path": "f.json",
        "indent": None,
    }
    _run(steps, data_dir)
    assert (data_dir / "f.json").read_text() == '{"a": 1}'
    (error,) = _errors([{**steps[1], "config": {"input": 1, "pretty_print": True, "indent": 4}}])
    assert "both 'pretty_print' and 'indent' are given" in error
    (error,) = _errors([{"name": "a", "plugin": "AI.mock", "config": {"prompt": "x",
                         "operation": "generate_insights"}}])  # fmt: skip
    assert "operation 'generate_insights' exists nowhere" in error


def test_input_api_data_is_a_json_body_on_post_and_put_only(data_dir: Path) -> None:
    with stub_server() as stub:
        stub.respond = lambda r: (200, {}, {"got": r.json()})
        post = {"name": "p", "plugin": "Input.api", "output": "p",
                "config": {"url": stub.base_url, "method": "POST", "data": {"q": 1}}}  # fmt: skip
        got = _run([post], data_dir).context["p"]
        assert got["body"] == {"got": {"q": 1}}
        get = {**post, "config": {"url": stub.base_url, "data": {"q": 1}}}
        (warning,) = _load([get]).warnings
        assert "'data' ignored: the original sent it only with POST and PUT" in warning.message


def test_unknown_fields_warn_by_default_and_fail_in_strict_mode() -> None:
    document = {
        "name": "t",
        "expected_results": {"x": 1},
        "steps": [{"name": "s", "plugin": "Debug.echo", "iterate": "rows"}],
    }
    pipeline = load_pipeline(document)
    assert [w.field for w in pipeline.warnings] == ["expected_results", "iterate"]
    with pytest.raises(PipelineValidationError) as caught:
        load_pipeline(document, strict=True)
    assert [i.message for i in caught.value.errors] == [
        "unknown field 'expected_results'",
        "unknown field 'iterate'",
    ]


# --------------------------------------------------------------------------- plugins


def test_output_json_without_a_file_and_html_with_only_a_title(data_dir: Path) -> None:
    steps = [
        READ,
        {"name": "j", "plugin": "Output.json", "config": {"input": "{{ json_data }}"},
         "output": "j"},
        {"name": "h", "plugin": "Output.html", "config": {"title": "T"}, "output": "h"},
    ]  # fmt: skip
    context = _run(steps, data_dir, {"who": "<b>me</b>"}).context
    assert json.loads(context["j"]["json_string"]) == {"a": 1}
    page = context["h"]["html"]
    assert "<h1>T</h1>" in page and "json_data" in page and "&lt;b&gt;me&lt;/b&gt;" in page
    assert list(data_dir.iterdir()) == []  # nothing written without a file_path


def test_markdown_gives_links_metadata_and_the_originals_names(data_dir: Path) -> None:
    (data_dir / "d.md").write_text(
        '---\nauthor: me\ntags: [a, b]\n---\n# T\n\nSee [docs](https://x.test/d "Docs") '
        "and ![logo](img/l.png).\n\n```\n[not](a-link)\n```\n<https://y.test>\n"
    )
    out = _run(
        [{"name": "m", "plugin": "Input.markdown", "config": {"file_path": "d.md",
          "extract_sections": False}, "output": "m"}], data_dir
    ).context["m"]  # fmt: skip
    assert out["metadata"] == {"author": "me", "tags": ["a", "b"]}
    assert out["links"] == [
        {"text": "docs", "url": "https://x.test/d", "line": 7, "image": False, "title": "Docs"},
        {"text": "logo", "url": "img/l.png", "line": 7, "image": True},
        {"text": "https://y.test", "url": "https://y.test", "line": 12, "image": False},
    ]
    assert "sections" not in out and out["content"] == out["text"]
    assert out["line_count"] == 12


def test_input_json_needs_exactly_one_source(data_dir: Path) -> None:
    (error,) = _errors([{"name": "j", "plugin": "Input.json", "config": {}}])
    assert "give exactly one of 'file_path' or 'json_string'" in error
    with pytest.raises(StepFailed, match="json_string: line 1, column 2: invalid JSON"):
        from tests.core.plugin_harness import run_plugin

        run_plugin("Input.json", {"json_string": "{nope"}, data_dir)


# --------------------------------------------------------------------------- rewrite


def test_url_rewrite_matches_whole_prefixes_only() -> None:
    rule = UrlRewrite.parse("https://httpbin.org=http://127.0.0.1:9")
    assert rule.apply("https://httpbin.org/get?a=1") == "http://127.0.0.1:9/get?a=1"
    assert rule.apply("https://httpbin.org") == "http://127.0.0.1:9"
    assert rule.apply("https://httpbin.org.evil.test/x") is None
    assert rule.apply("https://httpbin.org:8443/x") is None
    assert rule.apply("http://httpbin.org/get") is None
    with pytest.raises(ValueError, match="FROM=TO"):
        UrlRewrite.parse("httpbin.org=127.0.0.1")
    policy = OutboundPolicy.from_settings(
        Settings(http_rewrite=("https://a.test/v1=http://127.0.0.1:1/x", "https://b.test=http://c"))
    )
    assert policy.rewrite("https://a.test/v1/chat") == "http://127.0.0.1:1/x/chat"
    assert policy.rewrite("https://b.test/") == "http://c/"
    assert policy.rewrite("https://d.test/") == "https://d.test/"
    with pytest.raises(ValueError, match="MIMIR_HTTP_REWRITE"):
        OutboundPolicy.from_settings(Settings(http_rewrite=("nonsense",)))


def test_a_rewritten_url_is_still_held_to_the_outbound_policy(data_dir: Path) -> None:
    async def refused() -> str:
        policy = OutboundPolicy.from_settings(
            Settings(port=8080, http_rewrite=("https://api.test=http://127.0.0.1:8080",))
        )
        hook = policy.event_hooks("https://api.test/x")["request"][0]

        class Request:
            url = "https://api.test/x"
            headers: dict[str, str] = {}

        try:
            await hook(Request())  # type: ignore[operator]
        except Exception as exc:
            return str(exc)
        return "allowed"

    assert "this API's own address" in asyncio.run(refused())
