"""``Data_Processing.transform`` / ``aggregate`` and the safe expression language."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from mimir.core.errors import PipelineValidationError
from mimir.core.pipeline import load_pipeline
from mimir.core.plugins.builtin.expressions import ExpressionError, compile_expression
from tests.core.plugin_harness import StepFailed, run_pipeline, run_plugin

ROWS: list[dict[str, Any]] = [
    {"name": "Ann", "region": "north", "amount": 120, "units": "3"},
    {"name": "bob", "region": "south", "amount": 80.5, "units": "2"},
    {"name": "Cid", "region": "north", "amount": 40, "units": ""},
    {"name": "Dee", "region": "east", "amount": 300, "units": "10"},
]

# --------------------------------------------------------------------------- expressions


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("amount > 100 and region == 'north'", True),
        ("amount * 2 + 1", 241),
        ("amount / 7 // 1", 17.0),
        ("amount % 7", 1),
        ("0 < amount <= 120", True),
        ("lower(name) in ['ann', 'bob']", True),
        ("upper(region) + '!'", "NORTH!"),
        ("len(name) == 3 and not (amount < 0)", True),
        ("round(amount / 7, 2)", 17.14),
        ("abs(-amount)", 120),
        ("int(units) * 2", 6),
        ("'big' if amount >= 100 else 'small'", "big"),
        ("field('region') == get('region')", True),
        ("get('missing', 'dflt')", "dflt"),
        ("coalesce(get('missing'), name)", "Ann"),
        ("startswith(name, 'A') or endswith(name, 'z')", True),
        ("contains(name, 'nn')", True),
        ("max(amount, 500)", 500),
        ("null is None and true and not false", True),
    ],
)
def test_expressions_evaluate_against_a_row(source: str, expected: Any) -> None:
    assert compile_expression(source)(ROWS[0]) == expected


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("__import__('os').system('true')", "calling anything but a listed function"),
        ("__import__('os')", "unknown function '__import__'"),
        ("open('/etc/passwd')", "unknown function 'open'"),
        ("name.__class__", "attribute access ('.') is not allowed at column 1"),
        ("name[0]", "indexing"),
        ("amount ** 99999999", "the operator '**' is not allowed"),
        ("[x for x in name]", "a comprehension is not allowed"),
        ("lambda: 1", "lambda is not allowed"),
        ("f'{name}'", "an f-string is not allowed"),
        ("(y := 1)", "assignment (':=') is not allowed"),
        ("{'a': 1}", "a dict literal is not allowed"),
        ("amount > ", "invalid expression"),
        ("", "the expression is empty"),
        ("upper(s=name)", "keyword or * arguments"),
    ],
)
def test_expressions_refuse_what_is_not_whitelisted(source: str, message: str) -> None:
    with pytest.raises(ExpressionError, match=re.escape(message)):
        compile_expression(source)


def test_expression_runtime_errors_are_expression_errors() -> None:
    with pytest.raises(ExpressionError, match=r"no field 'amont' in the row \(fields: name"):
        compile_expression("amont > 1")(ROWS[0])
    with pytest.raises(ExpressionError, match="ZeroDivisionError"):
        compile_expression("amount / 0")(ROWS[0])
    with pytest.raises(ExpressionError, match="longer than 100000"):
        compile_expression("name * 100000")(ROWS[0])


# --------------------------------------------------------------------------- transform


def test_transform_filters_computes_sorts_selects_and_renames(data_dir: Path) -> None:
    out = run_plugin(
        "Data_Processing.transform",
        {
            "input": "{{ rows }}",
            "filter": "amount >= 50",
            "compute": {"amount_eur": "round(amount * 0.9, 2)", "label": "upper(name)"},
            "sort_by": "-amount_eur",
            "limit": 2,
            "select": ["label", "amount_eur", "region"],
            "rename": {"label": "who"},
        },
        data_dir,
        context={"rows": ROWS},
    )
    assert out == [
        {"who": "DEE", "amount_eur": 270.0, "region": "east"},
        {"who": "ANN", "amount_eur": 108.0, "region": "north"},
    ]
    # The context's rows were not changed in place.
    assert "label" not in ROWS[0]


def test_transform_sorts_by_several_fields_with_missing_values_last(data_dir: Path) -> None:
    rows = [{"r": "b", "n": 1}, {"r": "a", "n": None}, {"r": "a", "n": 2}, {"r": "b", "n": 3}]
    out = run_plugin(
        "Data_Processing.transform",
        {"input": rows, "sort_by": ["r", "-n"]},
        data_dir,
    )
    assert out == [
        {"r": "a", "n": 2},
        {"r": "a", "n": None},
        {"r": "b", "n": 3},
        {"r": "b", "n": 1},
    ]


def test_transform_bad_expression_is_refused_at_validation_with_its_line(data_dir: Path) -> None:
    yaml_text = (
        "name: t\n"
        "steps:\n"
        "  - name: shape\n"
        "    plugin: Data_Processing.transform\n"
        "    config:\n"
        "      input: '{{ rows }}'\n"
        "      filter: \"__import__('os').getcwd()\"\n"
    )
    with pytest.raises(PipelineValidationError) as caught:
        load_pipeline(yaml_text)
    (issue,) = caught.value.errors
    assert (issue.line, issue.step_index, issue.step_name, issue.field) == (
        7,
        1,
        "shape",
        "config.filter",
    )
    assert "calling anything but a listed function is not allowed" in issue.message


def test_transform_runtime_error_names_the_row_and_expression(data_dir: Path) -> None:
    with pytest.raises(StepFailed, match=r"row 2: compute\.ratio 'amount / units': TypeError"):
        run_plugin(
            "Data_Processing.transform",
            {"input": "{{ rows }}", "compute": {"ratio": "amount / units"}},
            data_dir,
            context={"rows": [{"amount": 1, "units": 1}, {"amount": 1, "units": "x"}]},
        )
    with pytest.raises(StepFailed, match=r"row 1: filter 'regoin == 1': no field 'regoin'"):
        run_plugin(
            "Data_Processing.transform",
            {"input": "{{ rows }}", "filter": "regoin == 1"},
            data_dir,
            context={"rows": ROWS},
        )


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            {"compute": {"pad": "'x' * 1000000000"}},
            r"row 1: compute\.pad \"'x' \* 1000000000\": '\*' would build text longer than "
            r"100000 characters \(limit MIMIR_EXPR_MAX_VALUE\)",
        ),
        (
            {"filter": "str([('x' * 100000)] * 20000) != ''"},
            r"row 1: filter .*: str\(\) of a list would build text longer than 100000 characters",
        ),
        (
            {"filter": "max([('x' * 100000)] * 100000) == 'x'"},
            r"row 1: filter .*: evaluating the expression takes more than 1000000 units of work "
            r"\(limit MIMIR_EXPR_MAX_WORK\)",
        ),
        (
            {"compute": {"label": "name % amount"}},
            r"row 1: compute\.label 'name % amount': formatting text with '%' is not allowed",
        ),
        (
            {"compute": {"deep": "-" * 150 + "amount"}},
            r"compute\.deep: the expression is nested more than 100 levels deep",
        ),
    ],
)
def test_transform_hostile_expression_fails_the_step_naming_the_limit(
    data_dir: Path, config: dict[str, Any], message: str
) -> None:
    with pytest.raises((StepFailed, PipelineValidationError), match=message):
        run_plugin("Data_Processing.transform", {"input": ROWS, **config}, data_dir)


def test_transform_refuses_text_formatting_when_the_pipeline_is_validated() -> None:
    yaml_text = (
        "name: t\n"
        "steps:\n"
        "  - name: shape\n"
        "    plugin: Data_Processing.transform\n"
        "    config:\n"
        "      input: '{{ rows }}'\n"
        "      compute:\n"
        "        pad: \"'%0100000000d' % amount\"\n"
    )
    with pytest.raises(PipelineValidationError) as caught:
        load_pipeline(yaml_text)
    (issue,) = caught.value.errors
    assert "formatting text with '%' is not allowed at column 1" in issue.message


def test_transform_passes_large_fields_on_but_bounds_what_it_builds_from_them(
    data_dir: Path,
) -> None:
    rows = [{"id": 1, "body": "y" * 1_000_000}, {"id": 2, "body": ""}]
    out = run_plugin(
        "Data_Processing.transform",
        {
            "input": "{{ rows }}",
            "filter": "len(body) > 0 and body != 'x'",
            "compute": {"size": "len(body)", "same": "body"},
        },
        data_dir,
        context={"rows": rows},
    )
    assert [(r["id"], r["size"], r["same"] is r["body"]) for r in out] == [(1, 1_000_000, True)]
    with pytest.raises(StepFailed, match=r"row 1: compute\.loud 'upper\(body\)': upper\(\) would"):
        run_plugin(
            "Data_Processing.transform",
            {"input": "{{ rows }}", "compute": {"loud": "upper(body)"}},
            data_dir,
            context={"rows": rows},
        )


def test_transform_needs_rows_of_objects(data_dir: Path) -> None:
    with pytest.raises(StepFailed, match=r"row 1 is a list, not an object"):
        run_plugin("Data_Processing.transform", {"input": [[1, 2]]}, data_dir)


def test_transform_select_of_an_unknown_field_is_named(data_dir: Path) -> None:
    with pytest.raises(StepFailed, match=r"select: no row has field\(s\) nmae"):
        run_plugin("Data_Processing.transform", {"input": ROWS, "select": ["nmae"]}, data_dir)


# --------------------------------------------------------------------------- aggregate


def test_aggregate_groups_with_count_sum_mean_min_max(data_dir: Path) -> None:
    out = run_plugin(
        "Data_Processing.aggregate",
        {
            "input": "{{ rows }}",
            "group_by": "region",
            "sum": ["amount", "units"],
            "mean": "units",
            "min": "amount",
            "max": ["amount", "name"],
        },
        data_dir,
        context={"rows": ROWS},
    )
    assert out == [
        {
            "region": "east",
            "count": 1,
            "amount_sum": 300,
            "units_sum": 10,
            "units_mean": 10.0,
            "amount_min": 300,
            "amount_max": 300,
            "name_max": "Dee",
        },
        {
            "region": "north",
            "count": 2,
            "amount_sum": 160,
            "units_sum": 3,  # the empty cell counts as missing, not zero
            "units_mean": 3.0,
            "amount_min": 40,
            "amount_max": 120,
            "name_max": "Cid",
        },
        {
            "region": "south",
            "count": 1,
            "amount_sum": 80.5,
            "units_sum": 2,
            "units_mean": 2.0,
            "amount_min": 80.5,
            "amount_max": 80.5,
            "name_max": "bob",
        },
    ]


def test_aggregate_by_two_fields_in_first_seen_order_and_over_everything(data_dir: Path) -> None:
    rows = [
        {"a": "x", "b": 2, "v": 1.1},
        {"a": "x", "b": 1, "v": 2.2},
        {"a": "x", "b": 2, "v": 3.3},
    ]
    by_two = run_plugin(
        "Data_Processing.aggregate",
        {"input": rows, "group_by": ["a", "b"], "sum": "v", "sort": False, "round": 2},
        data_dir,
    )
    assert by_two == [
        {"a": "x", "b": 2, "count": 2, "v_sum": 4.4},
        {"a": "x", "b": 1, "count": 1, "v_sum": 2.2},
    ]
    overall = run_plugin(
        "Data_Processing.aggregate", {"input": rows, "mean": "v", "round": 3}, data_dir
    )
    assert overall == [{"count": 3, "v_mean": 2.2}]


def test_aggregate_errors_name_the_row_and_field(data_dir: Path) -> None:
    with pytest.raises(StepFailed, match=r"row 2 has no field 'region' to group by"):
        run_plugin(
            "Data_Processing.aggregate",
            {"input": [{"region": "n"}, {"other": 1}], "group_by": "region"},
            data_dir,
        )
    with pytest.raises(StepFailed, match=r"row 2: field 'amount' is 'lots', not a number"):
        run_plugin(
            "Data_Processing.aggregate",
            {"input": [{"amount": 1}, {"amount": "lots"}], "sum": "amount"},
            data_dir,
        )
    with pytest.raises(StepFailed, match=r"no row has field\(s\) amuont"):
        run_plugin("Data_Processing.aggregate", {"input": ROWS, "sum": "amuont"}, data_dir)


def test_csv_to_aggregate_through_templates_keeps_the_list(data_dir: Path) -> None:
    (data_dir / "s.csv").write_text("region,amount\nn,1\ns,2\nn,3\n")
    result = run_pipeline(
        [
            {
                "name": "load",
                "plugin": "Input.csv",
                "config": {"file_path": "s.csv"},
                "output": "rows",
            },
            {
                "name": "sum",
                "plugin": "Data_Processing.aggregate",
                "config": {"input": "{{ rows }}", "group_by": "region", "sum": "amount"},
                "output": "summary",
            },
        ],
        data_dir,
    )
    assert result.success, result.error
    assert result.context["summary"] == [
        {"region": "n", "count": 2, "amount_sum": 4},
        {"region": "s", "count": 1, "amount_sum": 2},
    ]
