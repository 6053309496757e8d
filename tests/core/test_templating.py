"""Templates in step config: ``{{ key.path }}`` from the context, ``${NAME}`` from the env."""

from __future__ import annotations

from pathlib import Path

import pytest

from mimir.core.errors import TemplateError
from mimir.core.pipeline import render
from tests.core.plugin_harness import StepFailed, run_pipeline, run_plugin

CONTEXT = {
    "rows": [{"name": "a", "n": 1}, {"name": "b", "n": 2}],
    "count": 2,
    "meta": {"owner": {"email": "x@y"}, "ok": True, "none": None},
}


def test_a_whole_value_template_keeps_the_type() -> None:
    config = {
        "rows": "{{ rows }}",
        "count": "{{count}}",
        "ok": " {{ meta.ok }} ",
        "none": "{{ meta.none }}",
        "nested": ["{{ rows.1 }}", {"deep": "{{ meta.owner }}"}],
    }
    assert render(config, CONTEXT, {}) == {
        "rows": CONTEXT["rows"],
        "count": 2,
        "ok": True,
        "none": None,
        "nested": [{"name": "b", "n": 2}, {"deep": {"email": "x@y"}}],
    }


def test_templates_inside_text_are_formatted() -> None:
    assert render("n={{ count }}, first={{ rows.0.name }}", CONTEXT, {}) == "n=2, first=a"
    assert render("owner: {{ meta.owner }}", CONTEXT, {}) == 'owner: {"email": "x@y"}'
    assert render("[{{ meta.none }}]", CONTEXT, {}) == "[]"


def test_environment_variables_with_defaults() -> None:
    env = {"REGION": "north", "EMPTY": ""}
    assert render("${REGION}/{{ count }}", CONTEXT, env) == "north/2"
    assert render("${MISSING:-fallback}", CONTEXT, env) == "fallback"
    assert render("[${EMPTY}]", CONTEXT, env) == "[]"
    with pytest.raises(TemplateError, match=r"environment variable MISSING is not set"):
        render("${MISSING}", CONTEXT, env)
    with pytest.raises(TemplateError, match=r"cannot be read by a pipeline"):
        render("${MIMIR_API_TOKEN}", CONTEXT, {"MIMIR_API_TOKEN": "t"})


def test_missing_keys_name_what_is_available() -> None:
    with pytest.raises(TemplateError, match=r"no key 'cuont' in the context \(available: "):
        render("{{ cuont }}", CONTEXT, {})
    with pytest.raises(TemplateError, match=r"'rows' is a list of 2 items; '5' is not a valid"):
        render("{{ rows.5 }}", CONTEXT, {})
    with pytest.raises(TemplateError, match=r"no key 'phone' under 'meta.owner'"):
        render("{{ meta.owner.phone }}", CONTEXT, {})


def test_templates_through_the_engine(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIMIR_TEST_GREETING", "hello")
    out = run_plugin(
        "Debug.echo",
        {"value": {"list": "{{ rows }}", "text": "${MIMIR_TEST_GREETING} {{ rows.0.name }}"}},
        data_dir,
        context=CONTEXT,
    )
    assert out == {"list": CONTEXT["rows"], "text": "hello a"}


def test_a_template_error_fails_its_step_by_name(data_dir: Path) -> None:
    result = run_pipeline(
        [
            {"name": "first", "plugin": "Debug.echo", "config": {"value": 1}, "output": "one"},
            {"name": "second", "plugin": "Debug.echo", "config": {"value": "{{ tow }}"}},
        ],
        data_dir,
    )
    assert not result.success
    assert result.error is not None and result.error.startswith("step 2 'second' (Debug.echo)")
    assert "no key 'tow' in the context (available: one)" in result.error
    with pytest.raises(StepFailed, match="not set"):
        run_plugin("Debug.echo", {"value": "${MIMIR_SURELY_UNSET_VARIABLE}"}, data_dir)
