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

Attribute access, subscripts, lambdas, comprehensions and every other call are refused
when the expression is compiled, with a message that says what is not allowed.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["CompiledExpression", "ExpressionError", "compile_expression"]

Row = Mapping[str, Any]
Evaluator = Callable[[Row], Any]

#: Longest string or list an expression may build (stops ``"x" * 10**9``).
MAX_SEQUENCE = 100_000
MAX_LENGTH = 2_000


class ExpressionError(ValueError):
    """An expression is malformed, uses something not allowed, or failed on a row."""


_MISSING = object()


def _contains(container: Any, item: Any) -> bool:
    return item in container


def _coalesce(*values: Any) -> Any:
    return next((v for v in values if v is not None and v != ""), None)


def _round(value: Any, digits: int = 0) -> Any:
    return round(value, digits) if digits else round(value)


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "lower": lambda s: str(s).lower(),
    "upper": lambda s: str(s).upper(),
    "strip": lambda s: str(s).strip(),
    "len": len,
    "round": _round,
    "abs": abs,
    "int": int,
    "float": float,
    "str": str,
    "bool": bool,
    "min": min,
    "max": max,
    "contains": _contains,
    "startswith": lambda s, prefix: str(s).startswith(str(prefix)),
    "endswith": lambda s, suffix: str(s).endswith(str(suffix)),
    "coalesce": _coalesce,
}

_CONSTANT_NAMES = {"true": True, "false": False, "null": None, "none": None}

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {
    ast.Not: operator.not_,
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
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


def _lookup(row: Row, name: str) -> Any:
    value = row.get(name, _MISSING) if isinstance(row, Mapping) else _MISSING
    if value is _MISSING:
        fields = ", ".join(map(str, list(row)[:12])) if isinstance(row, Mapping) else "none"
        raise ExpressionError(f"no field {name!r} in the row (fields: {fields})")
    return value


def _safe_multiply(left: Any, right: Any) -> Any:
    for sequence, count in ((left, right), (right, left)):
        if (
            isinstance(sequence, str | list)
            and isinstance(count, int)
            and len(sequence) * count > MAX_SEQUENCE
        ):
            raise ExpressionError(f"result would be longer than {MAX_SEQUENCE} items")
    return left * right


class _Compiler:
    def __init__(self, source: str) -> None:
        self.source = source

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
        return lambda row: value

    def _List(self, node: ast.List) -> Evaluator:
        items = [self.compile(item) for item in node.elts]
        return lambda row: [item(row) for item in items]

    _Tuple = _List

    def _Name(self, node: ast.Name) -> Evaluator:
        name = node.id
        if name.lower() in _CONSTANT_NAMES:
            constant = _CONSTANT_NAMES[name.lower()]
            return lambda row: constant
        return lambda row: _lookup(row, name)

    def _BinOp(self, node: ast.BinOp) -> Evaluator:
        op_type = type(node.op)
        if op_type not in _BINARY:
            raise self.refuse(node, f"the operator {_SYMBOLS.get(op_type, op_type.__name__)!r}")
        left, right = self.compile(node.left), self.compile(node.right)
        function = _safe_multiply if op_type is ast.Mult else _BINARY[op_type]
        return lambda row: function(left(row), right(row))

    def _UnaryOp(self, node: ast.UnaryOp) -> Evaluator:
        op_type = type(node.op)
        if op_type not in _UNARY:
            raise self.refuse(node, "the operator '~'")
        operand, function = self.compile(node.operand), _UNARY[op_type]
        return lambda row: function(operand(row))

    def _BoolOp(self, node: ast.BoolOp) -> Evaluator:
        values = [self.compile(value) for value in node.values]
        if isinstance(node.op, ast.And):

            def all_of(row: Row) -> Any:
                result: Any = True
                for value in values:
                    result = value(row)
                    if not result:
                        return result
                return result

            return all_of

        def any_of(row: Row) -> Any:
            result: Any = False
            for value in values:
                result = value(row)
                if result:
                    return result
            return result

        return any_of

    def _Compare(self, node: ast.Compare) -> Evaluator:
        left = self.compile(node.left)
        steps = []
        for op, comparator in zip(node.ops, node.comparators, strict=True):
            steps.append((_COMPARE[type(op)], self.compile(comparator)))

        def compare(row: Row) -> bool:
            current = left(row)
            for function, right in steps:
                value = right(row)
                if not function(current, value):
                    return False
                current = value
            return True

        return compare

    def _IfExp(self, node: ast.IfExp) -> Evaluator:
        test, body, orelse = (self.compile(n) for n in (node.test, node.body, node.orelse))
        return lambda row: body(row) if test(row) else orelse(row)

    def _Call(self, node: ast.Call) -> Evaluator:
        if not isinstance(node.func, ast.Name):
            raise self.refuse(node, "calling anything but a listed function")
        name = node.func.id
        if node.keywords or any(isinstance(arg, ast.Starred) for arg in node.args):
            raise self.refuse(node, f"keyword or * arguments in {name}()")
        args = [self.compile(arg) for arg in node.args]
        if name in {"field", "get"}:
            return self._field_call(node, name, args)
        function = FUNCTIONS.get(name)
        if function is None:
            known = ", ".join(sorted([*FUNCTIONS, "field", "get"]))
            raise ExpressionError(f"unknown function {name!r} (known: {known})")

        def call(row: Row) -> Any:
            return function(*(arg(row) for arg in args))

        return call

    def _field_call(self, node: ast.Call, name: str, args: list[Evaluator]) -> Evaluator:
        if name == "field" and len(args) != 1:
            raise self.refuse(node, "field() with other than one argument")
        if name == "get" and len(args) not in (1, 2):
            raise self.refuse(node, "get() with other than a name and an optional default")
        key = args[0]
        if name == "field":
            return lambda row: _lookup(row, str(key(row)))
        default = args[1] if len(args) == 2 else (lambda row: None)
        return lambda row: row.get(str(key(row)), default(row))


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


class CompiledExpression:
    """An expression checked and compiled once, evaluated against many rows."""

    __slots__ = ("_evaluate", "source")

    def __init__(self, source: str, evaluate: Evaluator) -> None:
        self.source = source
        self._evaluate = evaluate

    def __call__(self, row: Row) -> Any:
        """The expression's value for ``row``; :class:`ExpressionError` when it fails."""
        try:
            return self._evaluate(row)
        except ExpressionError:
            raise
        except (TypeError, ValueError, ZeroDivisionError, OverflowError, AttributeError) as exc:
            raise ExpressionError(f"{type(exc).__name__}: {exc}") from None

    def __repr__(self) -> str:
        return f"CompiledExpression({self.source!r})"


def compile_expression(source: str) -> CompiledExpression:
    """Parse and check ``source``; raise :class:`ExpressionError` saying what is wrong."""
    if not isinstance(source, str) or not source.strip():
        raise ExpressionError("the expression is empty")
    if len(source) > MAX_LENGTH:
        raise ExpressionError(f"the expression is longer than {MAX_LENGTH} characters")
    try:
        tree = ast.parse(source.strip(), mode="eval")
    except SyntaxError as exc:
        where = f" at column {exc.offset}" if exc.offset else ""
        raise ExpressionError(f"invalid expression{where}: {exc.msg}") from None
    except (ValueError, RecursionError) as exc:  # NUL bytes, absurd nesting
        raise ExpressionError(f"invalid expression: {exc}") from None
    try:
        return CompiledExpression(source, _Compiler(source).compile(tree))
    except RecursionError:
        raise ExpressionError("the expression is nested too deeply") from None
