"""The expression language's bounds (issue 16): size of every value, work per evaluation,
length and nesting of the text. Hostile expressions fail fast, with bounded memory, with an
:class:`ExpressionError` that names the limit; everything else keeps working."""

from __future__ import annotations

import datetime
import json
import os
import re
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from mimir.core.limits import Limits
from mimir.core.plugins.builtin.expressions import (
    MAX_DEPTH,
    MAX_LENGTH,
    ExpressionError,
    compile_expression,
)

REPO = Path(__file__).resolve().parents[2]
#: Small bounds, so each check can be shown just inside and just past its limit.
SMALL = Limits(expr_max_value=10, expr_max_work=1_000)
VALUE = "(limit MIMIR_EXPR_MAX_VALUE)"
WORK = "(limit MIMIR_EXPR_MAX_WORK)"


def evaluate(source: str, row: dict[str, Any] | None = None, limits: Limits = SMALL) -> Any:
    return compile_expression(source, limits)(row or {})


def refused(source: str, row: dict[str, Any] | None = None, limits: Limits = SMALL) -> str:
    with pytest.raises(ExpressionError) as caught:
        evaluate(source, row, limits)
    return str(caught.value)


# --------------------------------------------------------------------------- value size


@pytest.mark.parametrize(
    ("inside", "expected", "past", "message"),
    [
        ("'ab' * 5", "ababababab", "'ab' * 6", "'*' would build text longer than 10 characters"),
        ("2 * [0] * 5", [0] * 10, "[0] * 11", "'*' would build a list longer than 10 items"),
        ("'abcde' + 'fghij'", "abcdefghij", "'abcde' + 'abcdef'", "'+' would build text"),
        ("[1] * 9 + [2]", [1] * 9 + [2], "[1] * 9 + [2, 3]", "'+' would build a list longer"),
        ("str([1, 2])", "[1, 2]", "str([1, 2, 3, 4])", "str() of a list would build text"),
        ("str(9999999999)", "9999999999", "str(n)", "str() would convert an integer longer"),
        ("99999 * 99999", 9999800001, "99999 * 999999", "'*' would build an integer longer"),
        ("9999999998 + 1", 9999999999, "9999999999 + 1", "'+' would build an integer longer"),
        ("-9999999998 - 1", -9999999999, "-9999999999 - 1", "'-' would build an integer"),
        ("int('1234567890')", 1234567890, "int('01234567890')", "int() would read a number"),
        ("int('2540be3ff', 16)", 9999999999, "int('2540be400', 16)", "int() would build an"),
        ("float('1234567.89')", 1234567.89, "float('12345678.90')", "float() would read a"),
        ("lower('ABCDEFGHIJ')", "abcdefghij", "lower('ABCDEFGHIJK')", "lower() would build text"),
    ],
)
def test_each_result_is_checked_against_expr_max_value_before_it_is_built(
    inside: str, expected: Any, past: str, message: str
) -> None:
    assert evaluate(inside) == expected
    error = refused(past, {"n": 12345678901})
    assert message in error and VALUE in error


def test_text_that_grows_when_upper_cased_is_checked_again() -> None:
    assert evaluate("upper('abcdefghi' + 'é')") == "ABCDEFGHIÉ"
    error = refused("upper('abcdefghi' + 'ß')")  # ß becomes SS: 11 characters
    assert error == f"upper() would build text longer than 10 characters {VALUE}"


@pytest.mark.skipif(
    not 0 < sys.get_int_max_str_digits() < 100_000, reason="needs Python's int digit limit"
)
def test_integers_are_also_bounded_by_pythons_own_digit_limit() -> None:
    digits = sys.get_int_max_str_digits()
    big = 10 ** (digits - 1)  # a field with the most digits Python will show
    assert evaluate("str(big)", {"big": big}, Limits()) == str(big)
    error = refused("big * 10", {"big": big}, Limits())
    assert f"'*' would build an integer longer than {digits} digits" in error
    assert "PYTHONINTMAXSTRDIGITS" in error


def test_text_formatting_with_percent_is_refused_and_numeric_modulo_still_works() -> None:
    assert "formatting text with '%' is not allowed at column 1" in refused("'%0100000000d' % 1")
    error = refused("fmt % n", {"fmt": "%0100000000d", "n": 1})
    assert "formatting text with '%' is not allowed (use str() and '+')" in error
    assert "formatting text" in refused("fmt % n", {"fmt": b"%d", "n": 1})
    assert evaluate("7 % 3") == 1
    assert evaluate("-7 // 2") == -4
    assert evaluate("7.5 % 2") == 1.5
    assert evaluate("a % b", {"a": 10**9 + 7, "b": 10}) == 7


def test_round_with_huge_digits_answers_at_once() -> None:
    assert evaluate("round(n, -1000000000)", {"n": 123}) == 0
    assert evaluate("round(n, -1)", {"n": 123}) == 120
    assert evaluate("round(n, -1000000000)", {"n": 123.5}) == 0.0
    assert evaluate("round(n, 1000000000)", {"n": 1.25}) == 1.25
    assert evaluate("round(2.5)") == 2
    assert evaluate("round(1.23456, 2)") == 1.23


# --------------------------------------------------------------------------- work


def test_work_is_counted_per_evaluation_across_operations() -> None:
    limits = Limits(expr_max_value=1_000, expr_max_work=500)
    once = compile_expression("len('x' * 400) > 0", limits)
    for _ in range(3):  # each evaluation starts with the whole budget
        assert once({}) is True
    error = refused("len('x' * 400) + len('x' * 400)", limits=limits)
    assert error == (
        "evaluating the expression takes more than 500 units of work (limit MIMIR_EXPR_MAX_WORK)"
    )


def test_an_expression_larger_than_the_work_budget_is_refused_when_compiled() -> None:
    with pytest.raises(ExpressionError, match=re.escape(WORK)) as caught:
        compile_expression("a + b + c", Limits(expr_max_work=4))
    assert "the expression is too large: it costs 5 units of work" in str(caught.value)


@pytest.mark.parametrize(
    "source",
    [
        "a == b",  # comparing lists element by element
        "1 in a",  # scanning a list
        "contains(a, n)",
        "max(a)",
        "min(a) + 1",
        "str(a) == ''",
        "contains(t, 'z')",  # scanning text
        "t == u",
        "t < u",
        "startswith(t, u)",
    ],
)
def test_scanning_large_values_costs_their_size(source: str) -> None:
    row = {"a": [1] * 5_000, "b": [1] * 5_000, "n": 2, "t": "y" * 20_000, "u": "y" * 20_000}
    limits = Limits(expr_max_value=100_000, expr_max_work=10_000)
    assert WORK in refused(source, row, limits)
    # The same operations on small values are cheap.
    small = {"a": [1, 2], "b": [1, 2], "n": 2, "t": "yz", "u": "yz"}
    evaluate(source, small, limits)


def test_large_row_values_can_be_read_but_not_copied_past_the_bounds() -> None:
    row = {"big": "y" * 100_000, "items": list(range(50_000))}
    # Reading, passing on, measuring and testing cost nothing that depends on the size...
    assert evaluate("big", row) is row["big"]
    assert evaluate("coalesce(get('nothing'), big)", row) is row["big"]
    assert evaluate("len(big) == 100000 and big != '' and big is not None", row) is True
    assert evaluate("big == 'y' or items == [1, 2]", row) is False
    assert evaluate("str(big)", row) is row["big"]
    assert evaluate("[big, big]", row) == [row["big"]] * 2
    assert evaluate("len(items) > 3 and 'x' in ['x', big]", row) is True
    # ...building from them does.
    assert "lower() would build text longer than 10 characters" in refused("lower(big)", row)
    assert "'+' would build text longer than 10 characters" in refused("big + ''", row)
    assert "int() would read a number longer than 10 characters" in refused("int(big)", row)
    assert WORK in refused("contains(big, 'z')", row)
    assert WORK in refused("strip(big) != ''", row)


# --------------------------------------------------------------------------- text


def test_deep_or_long_expressions_get_a_clear_error_not_a_crash() -> None:
    assert compile_expression("-" * (MAX_DEPTH - 1) + "1")({}) == -1
    for source in (
        "-" * MAX_DEPTH + "1",
        "-" * (MAX_LENGTH - 1) + "1",
        "+".join(["1"] * (MAX_DEPTH + 1)),
        "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1),
        "abs(" * (MAX_DEPTH + 1) + "1" + ")" * (MAX_DEPTH + 1),
    ):
        with pytest.raises(ExpressionError, match=f"nested more than {MAX_DEPTH} levels deep"):
            compile_expression(source)
    for source in ("(" * 10_000 + "1" + ")" * 10_000, "+".join(["1"] * 100_000)):
        with pytest.raises(ExpressionError, match=f"longer than {MAX_LENGTH} characters"):
            compile_expression(source)
    with pytest.raises(ExpressionError, match=r"invalid expression.*too many nested parentheses"):
        compile_expression("(" * 300 + "1" + ")" * 300)
    assert compile_expression("(" * 150 + "1" + ")" * 150)({}) == 1


def test_functions_are_called_with_the_right_number_of_arguments() -> None:
    for source, message in [
        ("lower()", "lower() takes 1 argument, not 0 (column 1)"),
        ("contains(a)", "contains() takes 2 arguments, not 1"),
        ("round(1, 2, 3)", "round() takes 1 to 2 arguments, not 3"),
        ("min()", "min() takes at least 1 argument, not 0"),
    ]:
        with pytest.raises(ExpressionError, match=re.escape(message)):
            compile_expression(source)
    assert evaluate("coalesce()") is None


# --------------------------------------------------------------------------- types


def test_arithmetic_applies_to_known_values_only() -> None:
    row: dict[str, Any] = {
        "thing": object(),
        "d1": datetime.date(2024, 1, 2),
        "d2": datetime.date(2024, 1, 1),
        "price": Decimal("1.25"),
    }
    limits = Limits()
    assert "'+' does not apply to a object" in refused("thing + 1", row, limits)
    assert "'*' does not apply to a object" in refused("2 * thing", row, limits)
    assert "abs() does not apply to a object" in refused("abs(thing)", row, limits)
    assert evaluate("thing is not None and thing == thing", row, limits) is True
    assert evaluate("d1 - d2", row, limits) == datetime.timedelta(days=1)
    assert evaluate("str(d1)", row, limits) == "2024-01-02"
    assert evaluate("price * 2", row, limits) == Decimal("2.50")


def test_missing_field_message_shortens_long_field_names() -> None:
    error = refused("nope", {"k" * 10_000: 1, 5: 2})
    assert error == f"no field 'nope' in the row (fields: {'k' * 37}..., <int>)"


def test_a_compiled_expression_can_be_shared_between_threads() -> None:
    # Each evaluation has its own budget: two sharing one would run out.
    expression = compile_expression(
        "len('x' * 600) + n", Limits(expr_max_value=1_000, expr_max_work=1_000)
    )
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda n: expression({"n": n}), range(2_000)))
    assert results == [600 + n for n in range(2_000)]


# --------------------------------------------------------------------------- attacks

#: Runs the expression on its stdin with the default limits in a child process capped at
#: 1 GiB of address space; prints the outcome, the time it took and how much the peak RSS
#: grew.
_CHILD = textwrap.dedent(
    """
    import json, resource, sys, time
    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
    from mimir.core.plugins.builtin.expressions import ExpressionError, compile_expression

    row = {
        "n": 12345,
        "fmt": "%0100000000d",
        "text": "y" * 1_000_000,
        "words": ["w"] * 200_000,
        "big": 7 ** 5000,
    }
    source = sys.stdin.read()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    try:
        value = compile_expression(source)(row)
        outcome = {"value": repr(value)[:200]}
    except ExpressionError as exc:
        outcome = {"error": str(exc)}
    outcome["seconds"] = time.perf_counter() - started
    outcome["rss_growth_mb"] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    print(json.dumps(outcome))
    """
)

_TOO_LONG = "longer than 100000 characters " + VALUE
_ATTACKS: list[tuple[str, str]] = [
    ("'%0100000000d' % 1", "formatting text with '%' is not allowed at column 1"),
    ("fmt % n", "formatting text with '%' is not allowed (use str() and '+')"),
    ("str([('x' * 100000)] * 20000)", "str() of a list would build text " + _TOO_LONG),
    ("len(str([[1] * 100000] * 100000))", "str() of a list would build text " + _TOO_LONG),
    ("str(words)", "str() of a list would build text " + _TOO_LONG),
    ("'x' * 1000000000", "'*' would build text " + _TOO_LONG),
    ("[0] * 1000000000", "'*' would build a list longer than 100000 items " + VALUE),
    ("'x' * 60000 + 'x' * 60000", "'+' would build text " + _TOO_LONG),
    ("text + '!'", "'+' would build text " + _TOO_LONG),
    ("lower(text)", "lower() would build text " + _TOO_LONG),
    ("upper(text) == ''", "upper() would build text " + _TOO_LONG),
    ("int(text)", "int() would read a number " + _TOO_LONG),
    ("float(text)", "float() would read a number " + _TOO_LONG),
    ("big * big", "'*' would build an integer longer than"),
    ("abs(big * big * big * big)", "'*' would build an integer longer than"),
    ("int('9' * 100000)", WORK),
    ("max([('x' * 100000)] * 100000)", WORK),
    ("'x' * 99999 + 'y' in ['x' * 100000] * 100000", WORK),
    ("contains(words, 'x' * 50000)", WORK),
    ("contains(text, 'z')", WORK),
    ("[text] * 100000 == [text] * 100000", WORK),
    (" + ".join(["len('x' * 99999)"] * 11), WORK),
    ("round(n, -1000000000)", "=0"),
    ("round(big, -1000000000)", "=0"),
    ("-" * 1999 + "1", f"nested more than {MAX_DEPTH} levels deep"),
    ("+".join(["1"] * 900), f"nested more than {MAX_DEPTH} levels deep"),
    ("(" * 10_000 + "1" + ")" * 10_000, f"longer than {MAX_LENGTH} characters"),
    ("+".join(["1"] * 100_000), f"longer than {MAX_LENGTH} characters"),
]


@pytest.mark.skipif(sys.platform == "win32", reason="needs resource.setrlimit")
@pytest.mark.parametrize(("source", "expected"), _ATTACKS, ids=[a[0][:40] for a in _ATTACKS])
def test_hostile_expression_fails_fast_with_bounded_memory(source: str, expected: str) -> None:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("MIMIR_EXPR_") and key != "PYTHONINTMAXSTRDIGITS"
    }
    child = subprocess.run(
        [sys.executable, "-c", _CHILD],
        input=source,
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert child.returncode == 0, child.stderr[-2000:]
    outcome = json.loads(child.stdout)
    if expected.startswith("="):
        assert outcome.get("value") == expected[1:], outcome
    else:
        assert expected in outcome.get("error", ""), outcome
    assert outcome["seconds"] < 1.0, outcome
    assert outcome["rss_growth_mb"] < 64, outcome
