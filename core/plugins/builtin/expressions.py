"""A small, safe expression language for row filters and computed fields.

Expressions use Python's syntax but only a whitelisted part of it, parsed with
:mod:`ast` and compiled to plain closures; nothing is ever passed to ``eval``.

- literals: numbers, strings, ``true``/``false``/``null`` (or ``True``/``False``/``None``),
  lists ``[1, 2]``;
- field names (``amount``), or ``field("name with spaces")`` / ``get("name", default)``;
- arithmetic ``+ - * / // %``, comparisons ``== != < <= > >= in not in``, chained
  (``0 < x <= 10``), boolean ``and or not``, ``a if cond else b``;
- functions: ``lower upper strip len round abs int float str bool min max contains
  startswith endswith coalesce``.

Attribute access, subscripts, lambdas, comprehensions, ``**``, bit operators, text
formatting with ``%`` and every other call are refused when the expression is compiled,
with a message that says what is not allowed.

Bounds (from :func:`mimir.core.limits.default_limits`, or the ``limits`` given to
:func:`compile_expression`):

- ``expr_max_value`` (``MIMIR_EXPR_MAX_VALUE``): no operation may build a string, list
  or integer longer than this many characters, items or decimal digits. Each operation
  works out the size of its result from its operands' sizes *before* building it
  (``'x' * n``, ``a + b``, ``str(list)``, ``int(text)``, ``a * b`` on integers...).
  Integers are also held to Python's own limit on their conversion to text (4,300
  digits, ``PYTHONINTMAXSTRDIGITS``), so that every result can be shown and saved.
- ``expr_max_work`` (``MIMIR_EXPR_MAX_WORK``): one evaluation may spend this many work
  units: one per node of the expression (charged up front: the language has no loops,
  so each node runs at most once per row), plus one per character, item or digit an
  operation builds, copies or scans (``lower(text)``, ``x in list``, ``str(list)``,
  comparing two lists), plus the limb products of big-integer ``*``, ``//``, ``%``.
- The text of an expression is at most :data:`MAX_LENGTH` characters and nests at most
  :data:`MAX_DEPTH` levels; both are fixed because they protect Python's parser and stack.

Values read from the row are never refused for their size: reading a field, passing it
on, ``len()``, truth tests, ``is None`` and comparing it with a literal cost the same
whatever the field's size. Operations that copy or scan a large field (``lower(body)``,
``contains(body, 'x')``, ``body + '!'``) cost its length and are subject to both bounds.
Values the expression language does not know (anything but numbers, text, bytes, lists,
tuples, dicts, ``None`` and dates/times) can be read and compared but not used in
arithmetic.
"""

from __future__ import annotations

import ast
import datetime
import functools
import itertools
import math
import operator
import sys
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

from mimir.core.limits import Limits, default_limits

__all__ = ["MAX_DEPTH", "MAX_LENGTH", "CompiledExpression", "ExpressionError", "compile_expression"]

#: Longest expression text, in characters (bounds the parser's work before it starts).
MAX_LENGTH = 2_000
#: Deepest nesting of an expression (``-(-(-x))``, ``a + b + c`` counts one per operator);
#: keeps the compiler and the evaluation's call stack far from Python's recursion limit.
MAX_DEPTH = 100

_VALUE_VARIABLE = "MIMIR_EXPR_MAX_VALUE"
_WORK_VARIABLE = "MIMIR_EXPR_MAX_WORK"
_LOG10_2 = 0.30102999566398120
#: Types arithmetic and the numeric functions accept (bool is an int, datetime a date).
_KNOWN = (
    int,
    float,
    Decimal,
    str,
    bytes,
    bytearray,
    list,
    tuple,
    dict,
    type(None),
    datetime.date,
    datetime.time,
    datetime.timedelta,
)
_SEQUENCES = (str, bytes, bytearray, list, tuple)
_TEXTS = (str, bytes, bytearray)


class ExpressionError(ValueError):
    """An expression is malformed, uses something not allowed, or failed on a row."""


class _OutOfWork(Exception):
    """The evaluation spent its work budget (turned into an ExpressionError by the caller)."""


_MISSING = object()
_NO_ROW: Mapping[str, Any] = {}

Row = Mapping[str, Any]
#: The state of one evaluation, passed to every closure: ``[row, work units left]``.
State = list[Any]
Evaluator = Callable[[State], Any]


def _charge(state: State, units: int) -> None:
    left = state[1] - units
    if left < 0:
        raise _OutOfWork
    state[1] = left


def _digits(value: int) -> int:
    """An upper bound on the decimal digits of ``value``, from its bit length (no conversion)."""
    return int(value.bit_length() * _LOG10_2) + 1


def _limbs(value: int) -> int:
    """CPython's 30-bit digits ("limbs") in ``value``: the unit of its big-integer algorithms."""
    return value.bit_length() // 30 + 1


def _unit(value: Any) -> str:
    if isinstance(value, str):
        return "characters"
    if isinstance(value, bytes | bytearray):
        return "bytes"
    if isinstance(value, int):
        return "digits"
    return "items"


def _kind(value: Any) -> str:
    names = {str: "text", bytes: "bytes", bytearray: "bytes", int: "an integer"}
    return names.get(type(value), f"a {type(value).__name__}")


def _measure(value: Any, limit: int) -> int:
    """About the length of ``repr(value)``, walking containers without recursion.

    Stops as soon as the total passes ``limit`` (returning more than ``limit``), so the
    walk itself costs at most about ``limit`` steps whatever ``value`` holds (shared or
    cyclic lists included: each visit counts again).
    """
    total = 0
    stack = [value]
    pop, extend = stack.pop, stack.extend
    while stack:
        item = pop()
        kind = type(item)
        if kind is str:  # printable: its length and quotes; escapes take up to ~4 each
            total += len(item) + 2 if item.isprintable() else 4 * len(item) + 2
        elif kind is int:
            total += _digits(item) + 1
        elif kind is float or kind is bool or item is None:
            total += 24
        elif kind is list or kind is tuple:
            total += 2 + 2 * len(item)
            if total > limit:
                return total
            extend(item)
        elif kind is dict:
            total += 2 + 4 * len(item)
            if total > limit:
                return total
            extend(item.keys())
            extend(item.values())
        elif isinstance(item, str):
            total += len(item) + 2 if item.isprintable() else 4 * len(item) + 2
        elif isinstance(item, bytes | bytearray):
            total += 4 * len(item) + 14
        elif isinstance(item, int):
            total += _digits(item) + 1
        elif isinstance(item, list | tuple | set | frozenset):
            total += 2 + 2 * len(item) + len(type(item).__name__)
            if total > limit:
                return total
            extend(item)
        elif isinstance(item, Mapping):
            total += 2 + 4 * len(item) + len(type(item).__name__)
            if total > limit:
                return total
            extend(item.keys())
            extend(item.values())
        elif isinstance(item, Decimal):
            total += len(item.as_tuple().digits) + 32
        else:
            total += 100  # dates and other fixed-size values; str() checks its result anyway
        if total > limit:
            return total
    return total


@functools.lru_cache(maxsize=4)
def _power_of_ten(digits: int) -> int:
    return 10**digits


def _shorten(key: Any) -> str:
    if not isinstance(key, str):
        return f"<{type(key).__name__}>"
    return key if len(key) <= 40 else key[:37] + "..."


def _lookup(state: State, name: str) -> Any:
    row = state[0]
    value = row.get(name, _MISSING)
    if value is _MISSING:
        shown = (_shorten(key) for key in itertools.islice(row, 12))
        fields = ", ".join(shown) or "none"
        raise ExpressionError(f"no field {name!r} in the row (fields: {fields})")
    return value


class _Operations:
    """The operations whose cost or result size depends on their operands, with their checks.

    Each method takes the evaluation's state first, checks the size of what it is about to
    build against ``expr_max_value`` and charges its work before doing it.
    """

    def __init__(self, limits: Limits) -> None:
        self.max_value = limits.expr_max_value
        # Integers are also held to Python's own bound on converting them to text (4,300
        # digits unless PYTHONINTMAXSTRDIGITS says otherwise): a larger one could be
        # neither shown nor saved.
        python_digits = sys.get_int_max_str_digits()
        self.max_digits = min(self.max_value, python_digits or self.max_value)
        self.digits_variable = (
            _VALUE_VARIABLE if self.max_digits == self.max_value else "PYTHONINTMAXSTRDIGITS"
        )
        #: The smallest integer too long (``max_digits + 1`` digits), and its bit length.
        self.ceiling = _power_of_ten(self.max_digits)
        self.max_bits = self.ceiling.bit_length()
        #: Integers smaller than this (in size) may be combined unchecked: their product,
        #: sum and difference are all below the ceiling.
        self.word = min(2**31, math.isqrt(self.ceiling) // 2)

    # ------------------------------------------------------------------ checks

    def too_big(self, what: str, unit: str) -> ExpressionError:
        return ExpressionError(
            f"{what} longer than {self.max_value} {unit} (limit {_VALUE_VARIABLE})"
        )

    def build(self, state: State, size: int, what: str, unit: str) -> None:
        """Check that a result of ``size`` is allowed and charge for building it."""
        if size > self.max_value:
            raise self.too_big(what, unit)
        _charge(state, size)

    def too_many_digits(self, what: str) -> ExpressionError:
        return ExpressionError(
            f"{what} an integer longer than {self.max_digits} digits (limit {self.digits_variable})"
        )

    def product(self, state: State, a: int, b: int) -> int:
        """``a * b``, refused before multiplying when it must have too many digits."""
        # The product has bit_length(a) + bit_length(b) bits, or one fewer.
        bits = a.bit_length() + b.bit_length()
        if bits - 1 > self.max_bits:
            raise self.too_many_digits("'*' would build")
        _charge(state, int(bits * _LOG10_2) + 1)
        result = a * b  # at most twice the ceiling: then checked exactly
        if not -self.ceiling < result < self.ceiling:
            raise self.too_many_digits("'*' would build")
        return result

    @staticmethod
    def known(what: str, *values: Any) -> None:
        for value in values:
            if not isinstance(value, _KNOWN):
                raise ExpressionError(f"{what} does not apply to a {type(value).__name__}")

    # ------------------------------------------------------------------ operators

    def bounded(self, result: Any, what: str) -> Any:
        """``result`` if it is not an integer with too many digits (sums grow a digit at most)."""
        if isinstance(result, int) and not -self.ceiling < result < self.ceiling:
            raise self.too_many_digits(what)
        return result

    def add(self, state: State, a: Any, b: Any) -> Any:
        if isinstance(a, _SEQUENCES) and isinstance(b, _SEQUENCES):
            self.build(state, len(a) + len(b), f"'+' would build {_kind(a)}", _unit(a))
            return operator.add(a, b)  # mixed kinds raise TypeError, as they should
        self.known("'+'", a, b)
        return self.bounded(a + b, "'+' would build")

    def subtract(self, state: State, a: Any, b: Any) -> Any:
        self.known("'-'", a, b)
        return self.bounded(a - b, "'-' would build")

    def multiply(self, state: State, a: Any, b: Any) -> Any:
        for sequence, count in ((a, b), (b, a)):
            if isinstance(sequence, _SEQUENCES) and isinstance(count, int):
                size = len(sequence) * max(count, 0)
                what = f"'*' would build {_kind(sequence)}"
                self.build(state, size, what, _unit(sequence))
                return a * b
        if isinstance(a, int) and isinstance(b, int):
            return self.product(state, a, b)
        self.known("'*'", a, b)
        return a * b

    def divide(self, state: State, a: Any, b: Any) -> Any:
        self.known("'/'", a, b)
        return a / b

    def _integer_division(self, state: State, a: int, b: int) -> None:
        # Schoolbook division: about (limbs of the quotient) x (limbs of the divisor).
        divisor = _limbs(b)
        _charge(state, max(1, _limbs(a) - divisor + 1) * divisor)

    def floor_divide(self, state: State, a: Any, b: Any) -> Any:
        if isinstance(a, int) and isinstance(b, int):
            self._integer_division(state, a, b)
        else:
            self.known("'//'", a, b)
        return a // b

    def modulo(self, state: State, a: Any, b: Any) -> Any:
        if isinstance(a, int) and isinstance(b, int):
            self._integer_division(state, a, b)
        elif isinstance(a, _TEXTS):
            raise ExpressionError("formatting text with '%' is not allowed (use str() and '+')")
        else:
            self.known("'%'", a, b)
        return a % b

    def negative(self, state: State, a: Any) -> Any:
        self.known("'-'", a)
        return -a

    def positive(self, state: State, a: Any) -> Any:
        self.known("'+'", a)
        return +a

    # ------------------------------------------------------------------ scanning costs

    def charge_compare(self, state: State, a: Any, b: Any) -> None:
        """Charge what comparing ``a`` with ``b`` may scan (it stops at the smaller one)."""
        kind_a, kind_b = type(a), type(b)
        if kind_a is str and kind_b is str:
            _charge(state, min(len(a), len(b)))
        elif isinstance(a, list | tuple | dict) and isinstance(b, list | tuple | dict):
            # A comparison stops at the smaller value: measure the shorter one first, then
            # the other no further than that. Every step of either walk is charged.
            first, second = (a, b) if len(a) <= len(b) else (b, a)
            size = _measure(first, state[1])
            _charge(state, size)
            _charge(state, _measure(second, size))
        elif isinstance(a, _SEQUENCES) and isinstance(b, _SEQUENCES):
            _charge(state, min(len(a), len(b)))

    def charge_contains(self, state: State, item: Any, container: Any) -> None:
        """Charge what ``item in container`` may scan."""
        if isinstance(container, _TEXTS):
            _charge(state, len(container) + (len(item) if isinstance(item, _TEXTS) else 1))
        elif isinstance(container, list | tuple):
            # Each comparison with an element stops at the smaller of the two values, so
            # the scan costs at most (elements x the item's size), or the container's size.
            count = len(container) or 1
            if type(item) is str:
                per_item = len(item) + 1
            else:
                per_item = _measure(item, state[1] // count) + 1
                _charge(state, per_item)  # the walk just done
            if count * per_item <= state[1]:
                _charge(state, count * per_item)
            else:
                _charge(state, _measure(container, state[1]))
        else:  # dicts and sets hash the item, then compare it with at most one key
            _charge(state, 1 if type(item) is str else _measure(item, state[1]))

    # ------------------------------------------------------------------ functions

    def text(self, state: State, value: Any) -> str:
        """``str(value)``, refused before converting when the text would be too long."""
        if type(value) is str:
            return value
        if isinstance(value, bool) or value is None or isinstance(value, float):
            return str(value)
        what = f"str() of a {type(value).__name__} would build text"
        if isinstance(value, int):
            if not -self.ceiling < value < self.ceiling:
                raise self.too_many_digits("str() would convert")
            _charge(state, _digits(value) + _limbs(value) ** 2)  # the conversion is quadratic
            return str(value)
        size = _measure(value, self.max_value)
        if size > self.max_value:
            raise self.too_big(what, "characters")
        _charge(state, size)
        result = str(value)
        if len(result) > self.max_value:  # an estimate was short (escapes, unknown types)
            raise self.too_big(what, "characters")
        return result

    def _transform_text(self, state: State, value: Any, method: Any, name: str) -> str:
        text = self.text(state, value)
        what = f"{name}() would build text"
        self.build(state, len(text), what, "characters")
        result: str = method(text)
        if len(result) > self.max_value:  # upper() and lower() may lengthen some letters
            raise self.too_big(what, "characters")
        return result

    def lower(self, state: State, value: Any) -> str:
        return self._transform_text(state, value, str.lower, "lower")

    def upper(self, state: State, value: Any) -> str:
        return self._transform_text(state, value, str.upper, "upper")

    def strip(self, state: State, value: Any) -> str:
        text = self.text(state, value)
        _charge(state, len(text))
        result = text.strip()
        if len(result) > self.max_value:
            raise self.too_big("strip() would build text", "characters")
        return result

    def length(self, state: State, value: Any) -> int:
        return len(value)

    def round(self, state: State, value: Any, digits: Any = None) -> Any:
        if isinstance(value, Decimal) and value.is_finite() and value.adjusted() >= self.max_digits:
            raise self.too_many_digits("round() would build")
        if not digits:
            return round(value)
        if isinstance(value, int) and isinstance(digits, int) and digits < 0:
            # round(n, -k) computes 10**k: past n's own digits the answer is 0 anyway.
            digits = max(digits, -(_digits(value) + 2))
            _charge(state, _limbs(value) * (-digits // 9 + 1))
        return round(value, digits)

    def absolute(self, state: State, value: Any) -> Any:
        self.known("abs()", value)
        return abs(value)

    def integer_of(self, state: State, value: Any, base: Any = _MISSING) -> int:
        if isinstance(value, _TEXTS):
            size = len(value)
            if size > self.max_value:
                raise self.too_big("int() would read a number", "characters")
            _charge(state, size + (size // 9 + 1) ** 2)  # the conversion is quadratic
            number = int(value) if base is _MISSING else int(value, base)
            if not -self.ceiling < number < self.ceiling:  # hexadecimal has no digit limit
                raise self.too_many_digits("int() would build")
            return number
        if base is not _MISSING:
            raise ExpressionError("int() with a base needs text")
        self.known("int()", value)
        if isinstance(value, Decimal) and value.is_finite() and value.adjusted() >= self.max_digits:
            raise self.too_many_digits("int() would build")
        return int(value)

    def float_of(self, state: State, value: Any) -> float:
        if isinstance(value, _TEXTS):
            if len(value) > self.max_value:
                raise self.too_big("float() would read a number", "characters")
            _charge(state, len(value))
        else:
            self.known("float()", value)
        return float(value)

    def text_of(self, state: State, value: Any) -> str:
        return self.text(state, value)

    def boolean(self, state: State, value: Any) -> bool:
        return bool(value)

    def _extreme(self, state: State, pick: Any, values: tuple[Any, ...]) -> Any:
        items = values[0] if len(values) == 1 else values
        _charge(state, _measure(items, state[1]))
        return pick(items)

    def minimum(self, state: State, *values: Any) -> Any:
        return self._extreme(state, min, values)

    def maximum(self, state: State, *values: Any) -> Any:
        return self._extreme(state, max, values)

    def contains(self, state: State, container: Any, item: Any) -> bool:
        self.charge_contains(state, item, container)
        return item in container

    def startswith(self, state: State, value: Any, prefix: Any) -> bool:
        text, start = self.text(state, value), self.text(state, prefix)
        _charge(state, len(start))
        return text.startswith(start)

    def endswith(self, state: State, value: Any, suffix: Any) -> bool:
        text, end = self.text(state, value), self.text(state, suffix)
        _charge(state, len(end))
        return text.endswith(end)

    def coalesce(self, state: State, *values: Any) -> Any:
        return next((v for v in values if v is not None and v != ""), None)


#: Each function: the method of :class:`_Operations`, the fewest and most arguments.
FUNCTIONS: dict[str, tuple[str, int, int | None]] = {
    "lower": ("lower", 1, 1),
    "upper": ("upper", 1, 1),
    "strip": ("strip", 1, 1),
    "len": ("length", 1, 1),
    "round": ("round", 1, 2),
    "abs": ("absolute", 1, 1),
    "int": ("integer_of", 1, 2),
    "float": ("float_of", 1, 1),
    "str": ("text_of", 1, 1),
    "bool": ("boolean", 1, 1),
    "min": ("minimum", 1, None),
    "max": ("maximum", 1, None),
    "contains": ("contains", 2, 2),
    "startswith": ("startswith", 2, 2),
    "endswith": ("endswith", 2, 2),
    "coalesce": ("coalesce", 0, None),
}

_CONSTANT_NAMES = {"true": True, "false": False, "null": None, "none": None}

_BINARY: dict[type[ast.operator], str] = {
    ast.Add: "add",
    ast.Sub: "subtract",
    ast.Mult: "multiply",
    ast.Div: "divide",
    ast.FloorDiv: "floor_divide",
    ast.Mod: "modulo",
}
#: Operators computed directly when both operands are floats or small ints (the common case).
_PLAIN: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
}
_COMPARE: dict[type[ast.cmpop], Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
    ast.Is: operator.is_,
    ast.IsNot: operator.is_not,
}
_SYMBOLS = {
    ast.Pow: "**",
    ast.BitAnd: "&",
    ast.BitOr: "|",
    ast.BitXor: "^",
    ast.LShift: "<<",
    ast.RShift: ">>",
    ast.MatMult: "@",
}


def _is_literal(node: ast.AST) -> bool:
    """A literal scalar, or a list/tuple literal of them: comparing with it costs its size."""
    if isinstance(node, ast.Constant):
        return True
    if isinstance(node, ast.Name):
        return node.id.lower() in _CONSTANT_NAMES
    if isinstance(node, ast.List | ast.Tuple):
        return all(_is_literal(item) for item in node.elts)
    return False


class _Compiler:
    def __init__(self, source: str, limits: Limits) -> None:
        self.source = source
        self.ops = _Operations(limits)

    def refuse(self, node: ast.AST, what: str) -> ExpressionError:
        column = getattr(node, "col_offset", None)
        where = f" at column {column + 1}" if column is not None else ""
        return ExpressionError(f"{what} is not allowed{where}")

    def compile(self, node: ast.AST) -> Evaluator:
        method = getattr(self, f"_{type(node).__name__}", None)
        if method is None:
            raise self.refuse(node, _describe_node(node))
        return method(node)

    def _Expression(self, node: ast.Expression) -> Evaluator:
        return self.compile(node.body)

    def _Constant(self, node: ast.Constant) -> Evaluator:
        value = node.value
        if not isinstance(value, str | int | float | bool | type(None)):
            raise self.refuse(node, f"the literal {value!r}")
        return lambda state: value

    def _List(self, node: ast.List | ast.Tuple) -> Evaluator:
        items = [self.compile(item) for item in node.elts]
        return lambda state: [item(state) for item in items]

    _Tuple = _List

    def _Name(self, node: ast.Name) -> Evaluator:
        name = node.id
        if name.lower() in _CONSTANT_NAMES:
            constant = _CONSTANT_NAMES[name.lower()]
            return lambda state: constant

        def lookup(state: State) -> Any:
            value = state[0].get(name, _MISSING)
            return _lookup(state, name) if value is _MISSING else value

        return lookup

    def _BinOp(self, node: ast.BinOp) -> Evaluator:
        op_type = type(node.op)
        if op_type not in _BINARY:
            raise self.refuse(node, f"the operator {_SYMBOLS.get(op_type, op_type.__name__)!r}")
        if (
            op_type is ast.Mod
            and isinstance(node.left, ast.Constant)
            and isinstance(node.left.value, str)
        ):
            raise self.refuse(node, "formatting text with '%'")
        left, right = self.compile(node.left), self.compile(node.right)
        checked = getattr(self.ops, _BINARY[op_type])
        plain = _PLAIN[op_type]
        # Floats, and ints whose square is short enough, go straight through: nothing they
        # give can be long. Everything else is checked (and charged) by _Operations.
        word = self.ops.word

        def arithmetic(state: State) -> Any:
            a, b = left(state), right(state)
            kind_a, kind_b = type(a), type(b)
            if kind_a is float:
                if kind_b is float or kind_b is int:
                    return plain(a, b)
            elif kind_a is int and (
                kind_b is float or (kind_b is int and -word < a < word and -word < b < word)
            ):
                return plain(a, b)
            return checked(state, a, b)

        return arithmetic

    def _UnaryOp(self, node: ast.UnaryOp) -> Evaluator:
        operand = self.compile(node.operand)
        if isinstance(node.op, ast.Not):
            return lambda state: not operand(state)
        if isinstance(node.op, ast.USub):
            negative = self.ops.negative

            def minus(state: State) -> Any:
                value = operand(state)
                kind = type(value)
                return -value if kind is int or kind is float else negative(state, value)

            return minus
        if isinstance(node.op, ast.UAdd):
            positive = self.ops.positive
            return lambda state: positive(state, operand(state))
        raise self.refuse(node, "the operator '~'")

    def _BoolOp(self, node: ast.BoolOp) -> Evaluator:
        values = [self.compile(value) for value in node.values]
        if isinstance(node.op, ast.And):

            def all_of(state: State) -> Any:
                result: Any = True
                for value in values:
                    result = value(state)
                    if not result:
                        return result
                return result

            return all_of

        def any_of(state: State) -> Any:
            result: Any = False
            for value in values:
                result = value(state)
                if result:
                    return result
            return result

        return any_of

    def _compare_charge(
        self, op: ast.cmpop, left: ast.AST, right: ast.AST
    ) -> Callable[[State, Any, Any], None] | None:
        """What to charge for one comparison; ``None`` when a literal operand bounds its cost
        (a comparison stops at the smaller operand, and literals are counted up front)."""
        if isinstance(op, ast.Is | ast.IsNot):
            return None
        if isinstance(op, ast.In | ast.NotIn):
            return None if _is_literal(right) else self.ops.charge_contains
        if _is_literal(left) or _is_literal(right):
            return None
        return self.ops.charge_compare

    def _Compare(self, node: ast.Compare) -> Evaluator:
        operands = [node.left, *node.comparators]
        evaluators = [self.compile(operand) for operand in operands]
        steps = [
            (_COMPARE[type(op)], self._compare_charge(op, operands[index], operands[index + 1]))
            for index, op in enumerate(node.ops)
        ]
        if len(steps) == 1:
            ((function, charge),) = steps
            first, second = evaluators
            if charge is None:
                return lambda state: function(first(state), second(state))

            def compare_one(state: State) -> Any:
                a, b = first(state), second(state)
                charge(state, a, b)
                return function(a, b)

            return compare_one
        left = evaluators[0]
        chain = [
            (function, charge, right)
            for (function, charge), right in zip(steps, evaluators[1:], strict=True)
        ]

        def compare(state: State) -> bool:
            current = left(state)
            for function, charge, right in chain:
                value = right(state)
                if charge is not None:
                    charge(state, current, value)
                if not function(current, value):
                    return False
                current = value
            return True

        return compare

    def _IfExp(self, node: ast.IfExp) -> Evaluator:
        test, body, orelse = (self.compile(n) for n in (node.test, node.body, node.orelse))
        return lambda state: body(state) if test(state) else orelse(state)

    def _Call(self, node: ast.Call) -> Evaluator:
        if not isinstance(node.func, ast.Name):
            raise self.refuse(node, "calling anything but a listed function")
        name = node.func.id
        if node.keywords or any(isinstance(arg, ast.Starred) for arg in node.args):
            raise self.refuse(node, f"keyword or * arguments in {name}()")
        args = [self.compile(arg) for arg in node.args]
        if name in {"field", "get"}:
            return self._field_call(node, name, args)
        if name not in FUNCTIONS:
            known = ", ".join(sorted([*FUNCTIONS, "field", "get"]))
            raise ExpressionError(f"unknown function {name!r} (known: {known})")
        method, fewest, most = FUNCTIONS[name]
        if len(args) < fewest or (most is not None and len(args) > most):
            wanted = str(fewest) if fewest == most else f"{fewest} to {most}"
            if most is None:
                wanted = f"at least {fewest}"
            raise ExpressionError(
                f"{name}() takes {wanted} argument{'' if wanted.endswith('1') else 's'}, "
                f"not {len(args)} (column {node.col_offset + 1})"
            )
        function = getattr(self.ops, method)
        if len(args) == 1:
            (only,) = args
            return lambda state: function(state, only(state))
        if len(args) == 2:
            first, second = args
            return lambda state: function(state, first(state), second(state))
        return lambda state: function(state, *[arg(state) for arg in args])

    def _field_call(self, node: ast.Call, name: str, args: list[Evaluator]) -> Evaluator:
        if name == "field" and len(args) != 1:
            raise self.refuse(node, "field() with other than one argument")
        if name == "get" and len(args) not in (1, 2):
            raise self.refuse(node, "get() with other than a name and an optional default")
        key, text = args[0], self.ops.text
        if name == "field":
            return lambda state: _lookup(state, text(state, key(state)))
        default = args[1] if len(args) == 2 else (lambda state: None)
        return lambda state: state[0].get(text(state, key(state)), default(state))


def _describe_node(node: ast.AST) -> str:
    names = {
        "Attribute": "attribute access ('.')",
        "Subscript": "indexing ('[...]')",
        "Lambda": "lambda",
        "ListComp": "a comprehension",
        "SetComp": "a comprehension",
        "DictComp": "a comprehension",
        "GeneratorExp": "a generator",
        "NamedExpr": "assignment (':=')",
        "Await": "await",
        "Dict": "a dict literal",
        "Set": "a set literal",
        "JoinedStr": "an f-string",
        "Starred": "'*'",
        "Slice": "slicing",
    }
    return names.get(type(node).__name__, f"{type(node).__name__} syntax")


def _static_cost(tree: ast.Expression) -> int:
    """Work charged up front: one unit per node, plus the length of each text literal.

    Raises :class:`ExpressionError` when the tree nests deeper than :data:`MAX_DEPTH`.
    """
    cost = 0
    stack: list[tuple[ast.AST, int]] = [(tree.body, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ExpressionError(f"the expression is nested more than {MAX_DEPTH} levels deep")
        cost += 1
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            cost += len(node.value)
        stack.extend(
            (child, depth + 1)
            for child in ast.iter_child_nodes(node)
            if isinstance(child, ast.expr)
        )
    return cost


class CompiledExpression:
    """An expression checked and compiled once, evaluated against many rows."""

    __slots__ = ("_evaluate", "_max_work", "_work", "source")

    def __init__(self, source: str, evaluate: Evaluator, max_work: int, static_cost: int) -> None:
        self.source = source
        self._evaluate = evaluate
        self._max_work = max_work
        self._work = max_work - static_cost

    def __call__(self, row: Row) -> Any:
        """The expression's value for ``row``; :class:`ExpressionError` when it fails."""
        if type(row) is not dict and not isinstance(row, Mapping):
            row = _NO_ROW
        try:
            return self._evaluate([row, self._work])
        except ExpressionError:
            raise
        except _OutOfWork:
            raise ExpressionError(
                f"evaluating the expression takes more than {self._max_work} units of work "
                f"(limit {_WORK_VARIABLE})"
            ) from None
        except (TypeError, ValueError, ArithmeticError, AttributeError, LookupError) as exc:
            raise ExpressionError(f"{type(exc).__name__}: {exc}") from None
        except RecursionError:
            raise ExpressionError("the expression is nested too deeply") from None

    def __repr__(self) -> str:
        return f"CompiledExpression({self.source!r})"


def compile_expression(source: str, limits: Limits | None = None) -> CompiledExpression:
    """Parse and check ``source``; raise :class:`ExpressionError` saying what is wrong.

    ``limits`` (default :func:`~mimir.core.limits.default_limits`) bound every evaluation
    of the result: see the module's documentation.
    """
    if not isinstance(source, str) or not source.strip():
        raise ExpressionError("the expression is empty")
    if len(source) > MAX_LENGTH:
        raise ExpressionError(f"the expression is longer than {MAX_LENGTH} characters")
    if limits is None:
        limits = default_limits()
    try:
        tree = ast.parse(source.strip(), mode="eval")
    except SyntaxError as exc:
        where = f" at column {exc.offset}" if exc.offset else ""
        raise ExpressionError(f"invalid expression{where}: {exc.msg}") from None
    except (ValueError, RecursionError, MemoryError) as exc:  # NUL bytes, absurd nesting
        raise ExpressionError(f"invalid expression: {exc}") from None
    static_cost = _static_cost(tree)
    if static_cost > limits.expr_max_work:
        raise ExpressionError(
            f"the expression is too large: it costs {static_cost} units of work before "
            f"computing anything, more than {limits.expr_max_work} (limit {_WORK_VARIABLE})"
        )
    try:
        evaluate = _Compiler(source, limits).compile(tree)
    except RecursionError:
        raise ExpressionError("the expression is nested too deeply") from None
    return CompiledExpression(source, evaluate, limits.expr_max_work, static_cost)
