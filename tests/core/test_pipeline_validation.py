"""Validation before anything runs: each kind of problem, located by line, step and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from mimir.core.errors import PipelineNotFoundError, PipelineValidationError
from mimir.core.pipeline import ValidationIssue, load_pipeline


def _issues(source: str | Path | dict[str, object]) -> list[ValidationIssue]:
    with pytest.raises(PipelineValidationError) as caught:
        load_pipeline(source)
    return caught.value.errors


def test_yaml_syntax_error_names_line_and_column() -> None:
    (issue,) = _issues("name: x\nsteps:\n  - name: a\n    plugin: [Debug.echo\n")
    assert issue.message.startswith("invalid YAML:")
    assert (issue.line, issue.column) == (5, 1)
    assert str(issue).startswith("line 5, column 1: invalid YAML")


def test_bad_indentation_names_its_line() -> None:
    (issue,) = _issues("name: x\nsteps:\n  - name: a\n   plugin: Debug.echo\n")
    assert issue.line == 4
    assert "invalid YAML" in issue.message


def test_unknown_plugin_names_the_step_and_suggests() -> None:
    text = "name: x\nsteps:\n  - name: load\n    plugin: Input.cvs\n    config: {}\n"
    (issue,) = _issues(text)
    assert (issue.line, issue.column, issue.step_index, issue.step_name, issue.field) == (
        4,
        13,
        1,
        "load",
        "plugin",
    )
    assert issue.suggestions[0] == "Input.csv"
    assert str(issue) == (
        "line 4, column 13, step 1 'load', field 'plugin': unknown plugin 'Input.cvs' "
        f"(did you mean {', '.join(issue.suggestions)}?)"
    )


def test_a_plugin_name_of_the_wrong_shape_is_a_schema_error() -> None:
    (issue,) = _issues("name: x\nsteps:\n  - name: a\n    plugin: echo\n")
    assert (issue.step_index, issue.field, issue.line) == (1, "plugin", 4)
    assert "plugin must look like '<Type>.<name>'" in issue.message


def test_unknown_and_missing_step_fields() -> None:
    text = (
        "name: x\nsteps:\n"
        "  - name: a\n    plugin: Debug.echo\n    ouptut: r\n"
        "  - plugin: Debug.echo\n"
    )
    # Strict: an unknown field is an error.
    with pytest.raises(PipelineValidationError) as caught:
        load_pipeline(text, strict=True)
    first, second = caught.value.errors
    assert (first.step_index, first.step_name, first.field, first.line) == (1, "a", "ouptut", 5)
    assert first.message == "unknown field 'ouptut' (did you mean output?)"
    assert (second.step_index, second.field, second.message) == (
        2,
        "name",
        "required field is missing",
    )
    assert second.line == 6
    # By default, as the original platform did, it is ignored, with a warning that says so.
    (missing,) = _issues(text)
    assert (missing.step_index, missing.field) == (2, "name")
    pipeline = load_pipeline(text.replace("  - plugin: Debug.echo\n", ""))
    (warning,) = pipeline.warnings
    assert (warning.step_index, warning.field, warning.line) == (1, "ouptut", 5)
    assert warning.message.startswith("unknown field 'ouptut' ignored")
    assert warning.message.endswith("(did you mean output?)")
    assert warning.suggestions == ["output"]


def test_config_checked_against_the_plugins_model() -> None:
    text = (
        "name: x\n"
        "steps:\n"
        "  - name: nap\n"
        "    plugin: Debug.sleep\n"
        "    config:\n"
        "      seconds: lots\n"
        "  - name: read\n"
        "    plugin: Input.csv\n"
        "    config:\n"
        "      file_pth: a.csv\n"
    )
    wrong_type, missing, unknown = _issues(text)
    assert (wrong_type.line, wrong_type.step_name, wrong_type.field) == (6, "nap", "config.seconds")
    assert "valid number" in wrong_type.message
    assert (missing.step_index, missing.field, missing.message) == (
        2,
        "config.file_path",
        "required by Input.csv but missing",
    )
    assert (unknown.line, unknown.field) == (10, "config.file_pth")
    assert (
        unknown.message == "unknown config key 'file_pth' for Input.csv (did you mean file_path?)"
    )


def test_templated_config_values_are_checked_at_run_time_not_before() -> None:
    pipeline = load_pipeline(
        {
            "name": "x",
            "steps": [{"name": "nap", "plugin": "Debug.sleep", "config": {"seconds": "{{ s }}"}}],
        }
    )
    assert pipeline.steps[0].templated


def test_duplicate_step_names_and_empty_steps() -> None:
    text = "name: x\nsteps:\n  - {name: a, plugin: Debug.echo}\n  - {name: a, plugin: Debug.echo}\n"
    (issue,) = _issues(text)
    assert (issue.step_index, issue.field, issue.line) == (2, "name", 4)
    assert "duplicate step name" in issue.message
    (empty,) = _issues("name: x\nsteps: []\n")
    assert empty.field == "steps" and empty.line == 2


def test_document_that_is_not_a_pipeline() -> None:
    (issue,) = _issues("- just\n- a list\n")
    assert "must be a mapping with 'name' and 'steps'" in issue.message


def test_pipelines_list_form_runs_the_first_enabled_and_locates_errors() -> None:
    text = (
        "pipelines:\n"
        "  - name: old\n"
        "    enabled: false\n"
        "    steps: [{name: a, plugin: Debug.echo}]\n"
        "  - name: current\n"
        "    enabled: true\n"
        "    steps:\n"
        "      - name: b\n"
        "        plugin: Debug.ehco\n"
    )
    (issue,) = _issues(text)
    assert (issue.line, issue.step_name, issue.field) == (9, "b", "plugin")
    assert "Debug.echo" in issue.suggestions
    good = load_pipeline(text.replace("Debug.ehco", "Debug.echo"))
    assert good.name == "current"


def test_timeouts_accept_go_durations_and_reject_nonsense() -> None:
    pipeline = load_pipeline(
        {"name": "x", "steps": [{"name": "a", "plugin": "Debug.echo", "timeout": "1m30s"}]}
    )
    assert pipeline.steps[0].timeout == 90
    (issue,) = _issues(
        {"name": "x", "steps": [{"name": "a", "plugin": "Debug.echo", "timeout": -1}]}
    )
    assert (issue.step_index, issue.field) == (1, "timeout")


def test_missing_file_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(PipelineNotFoundError, match="does not exist"):
        load_pipeline(tmp_path / "nope.yaml")


def test_the_shipped_examples_are_valid() -> None:
    examples = Path(__file__).resolve().parents[2] / "resources" / "pipelines"
    files = sorted(examples.glob("*.yaml"))
    assert {f.name for f in files} >= {"test_pipeline.yaml", "sales_report.yaml", "ai_summary.yaml"}
    for file in files:
        assert load_pipeline(file).steps
