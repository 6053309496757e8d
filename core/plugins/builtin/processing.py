"""``Data_Processing.*``: reshape rows (transform) and summarise them by group (aggregate).

Rows are objects (``list[dict]``), as ``Input.csv`` with headers or ``Input.json``
produce them. Expressions in ``filter`` and ``compute`` use the safe language of
:mod:`mimir.core.plugins.builtin.expressions`; they are checked when the pipeline is
validated, before anything runs.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping
from typing import Any

from pydantic import Field, field_validator

from mimir.core.errors import PluginError
from mimir.core.plugins.base import Plugin, PluginConfig, StepRuntime, context_input
from mimir.core.plugins.builtin.expressions import (
    CompiledExpression,
    ExpressionError,
    compile_expression,
)

__all__ = ["AggregatePlugin", "TransformPlugin"]

#: Above this many rows the work moves to a thread so the event loop stays free.
_THREAD_THRESHOLD = 5_000


def _check_expression(value: str) -> str:
    try:
        compile_expression(value)
    except ExpressionError as exc:
        raise ValueError(f"{exc} in {value!r}") from None
    return value


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


def _rows(value: Any, what: str = "input") -> list[dict[str, Any]]:
    if isinstance(value, Mapping):
        return [dict(value)]
    if not isinstance(value, list):
        raise PluginError(f"{what} must be a list of objects, got a {type(value).__name__}")
    for index, row in enumerate(value):
        if not isinstance(row, Mapping):
            raise PluginError(
                f"{what}: row {index + 1} is a {type(row).__name__}, not an object "
                f"(read CSV files with has_headers: true)"
            )
    return value


# --------------------------------------------------------------------------- transform


class TransformConfig(PluginConfig):
    input: Any = context_input(description="Rows to transform: a list of objects.")
    filter: str | None = Field(
        default=None, description="Keep rows for which this expression is true."
    )
    compute: dict[str, str] = Field(
        default_factory=dict,
        description="New fields: name → expression (later ones may use earlier ones).",
    )
    select: list[str] | None = Field(
        default=None, description="Keep only these fields, in this order."
    )
    rename: dict[str, str] = Field(default_factory=dict, description="Rename fields: old → new.")
    sort_by: list[str] = Field(
        default_factory=list, description="Sort by these fields ('-field' for descending)."
    )
    limit: int | None = Field(default=None, ge=0, description="Keep at most this many rows.")

    @field_validator("filter")
    @classmethod
    def _filter(cls, value: str | None) -> str | None:
        return None if value is None else _check_expression(value)

    @field_validator("compute")
    @classmethod
    def _compute(cls, value: dict[str, str]) -> dict[str, str]:
        for name, expression in value.items():
            try:
                compile_expression(expression)
            except ExpressionError as exc:
                raise ValueError(f"compute.{name}: {exc} in {expression!r}") from None
        return value

    @field_validator("sort_by", "select", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return _as_list(value)


def _sort_key(value: Any) -> tuple[int, Any]:
    # None sorts last; numbers before text; mixed types never raise.
    if value is None:
        return (3, 0)
    if isinstance(value, bool | int | float):
        return (0, value)
    if isinstance(value, str):
        return (1, value)
    return (2, str(value))


def _transform(config: TransformConfig) -> list[dict[str, Any]]:
    rows = _rows(config.input)
    keep = compile_expression(config.filter) if config.filter else None
    computed: list[tuple[str, CompiledExpression]] = [
        (name, compile_expression(source)) for name, source in config.compute.items()
    ]
    result: list[dict[str, Any]] = []
    for number, row in enumerate(rows, start=1):
        if keep is not None:
            try:
                if not keep(row):
                    continue
            except ExpressionError as exc:
                raise PluginError(f"row {number}: filter {config.filter!r}: {exc}") from None
        if computed:
            row = dict(row)
            for name, expression in computed:
                try:
                    row[name] = expression(row)
                except ExpressionError as exc:
                    raise PluginError(
                        f"row {number}: compute.{name} {expression.source!r}: {exc}"
                    ) from None
        result.append(row)
    for field in reversed(config.sort_by):
        descending = field.startswith("-")
        name = field.lstrip("-+")

        def key(row: dict[str, Any], name: str = name) -> tuple[int, Any]:
            return _sort_key(row.get(name))

        # Rows without a value go last whichever the direction (sorts are stable).
        present = [row for row in result if row.get(name) is not None]
        missing = [row for row in result if row.get(name) is None]
        result = sorted(present, key=key, reverse=descending) + missing
    if config.limit is not None:
        result = result[: config.limit]
    if config.select is not None:
        absent = [f for f in config.select if result and all(f not in r for r in result)]
        if absent:
            available = ", ".join(list(result[0])[:20])
            raise PluginError(
                f"select: no row has field(s) {', '.join(absent)} (fields: {available})"
            )
        result = [{f: r.get(f) for f in config.select} for r in result]
    elif not computed:
        result = [dict(r) for r in result]
    if config.rename:
        result = [{config.rename.get(k, k): v for k, v in r.items()} for r in result]
    return result


class TransformPlugin(Plugin[TransformConfig]):
    plugin_type = "Data_Processing"
    plugin_name = "transform"
    description = "Filter, compute, sort, select and rename fields of rows (safe expressions)."
    config_model = TransformConfig

    async def run(self, config: TransformConfig, run: StepRuntime) -> Any:
        if isinstance(config.input, list) and len(config.input) > _THREAD_THRESHOLD:
            return await asyncio.to_thread(_transform, config)
        return _transform(config)


# --------------------------------------------------------------------------- aggregate


class AggregateConfig(PluginConfig):
    input: Any = context_input(description="Rows to summarise: a list of objects.")
    group_by: list[str] = Field(
        default_factory=list, description="Field(s) to group by (none: one group of all rows)."
    )
    count: bool = Field(default=True, description="Add 'count', the rows in each group.")
    sum: list[str] = Field(default_factory=list, description="Fields to add up → '<field>_sum'.")
    mean: list[str] = Field(default_factory=list, description="Fields to average → '<field>_mean'.")
    min: list[str] = Field(default_factory=list, description="Fields' smallest → '<field>_min'.")
    max: list[str] = Field(default_factory=list, description="Fields' largest → '<field>_max'.")
    sort: bool = Field(default=True, description="Sort groups by their keys (else first seen).")
    round: int | None = Field(
        default=None, ge=0, le=15, description="Round sums and means to this many decimals."
    )

    @field_validator("group_by", "sum", "mean", "min", "max", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return _as_list(value)


def _number(value: Any, field: str, row_number: int) -> float | int | None:
    """``value`` as a number; ``None``/``""`` mean missing; anything else is an error."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int | float):
        return value
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            pass
        else:
            return int(number) if number.is_integer() and "." not in value else number
    raise PluginError(f"row {row_number}: field {field!r} is {value!r}, not a number")


def _extreme(values: list[Any], field: str, pick: Any) -> Any:
    present = [v for v in values if v is not None and v != ""]
    if not present:
        return None
    if all(isinstance(v, str) for v in present):
        numbers: list[Any] = []
        for v in present:
            try:
                numbers.append(float(v))
            except ValueError:
                return pick(present)  # text such as ISO dates compares as text
        chosen = pick(numbers)
        return int(chosen) if chosen.is_integer() else chosen
    try:
        return pick(present)
    except TypeError:
        raise PluginError(f"field {field!r} mixes values that cannot be compared") from None


def _aggregate(config: AggregateConfig) -> list[dict[str, Any]]:
    rows = _rows(config.input)
    groups: dict[tuple[Any, ...], list[tuple[int, dict[str, Any]]]] = {}
    for number, row in enumerate(rows, start=1):
        try:
            key = tuple(row[field] for field in config.group_by)
        except KeyError as exc:
            fields = ", ".join(list(row)[:20])
            raise PluginError(
                f"row {number} has no field {exc.args[0]!r} to group by (fields: {fields})"
            ) from None
        try:
            hash(key)
        except TypeError:
            raise PluginError(f"row {number}: group_by values must be scalars") from None
        groups.setdefault(key, []).append((number, row))
    keys = list(groups)
    if config.sort:
        keys.sort(key=lambda k: tuple(_sort_key(v) for v in k))
    wanted = {*config.sum, *config.mean, *config.min, *config.max}
    known = {name for row in rows for name in row}
    unknown = sorted(wanted - known) if rows else []
    if unknown:
        raise PluginError(
            f"no row has field(s) {', '.join(unknown)} (fields: {', '.join(sorted(known)[:20])})"
        )

    def rounded(value: float | int) -> float | int:
        return round(value, config.round) if config.round is not None else value

    output: list[dict[str, Any]] = []
    for key in keys:
        members = groups[key]
        record: dict[str, Any] = dict(zip(config.group_by, key, strict=True))
        if config.count:
            record["count"] = len(members)
        for field in dict.fromkeys([*config.sum, *config.mean]):
            numbers = [_number(row.get(field), field, n) for n, row in members]
            present = [v for v in numbers if v is not None]
            floats = any(isinstance(v, float) for v in present)
            total = math.fsum(present) if floats else sum(present)
            if field in config.sum:
                record[f"{field}_sum"] = rounded(total)
            if field in config.mean:
                record[f"{field}_mean"] = rounded(total / len(present)) if present else None
        for field in config.min:
            record[f"{field}_min"] = _extreme([row.get(field) for _, row in members], field, min)
        for field in config.max:
            record[f"{field}_max"] = _extreme([row.get(field) for _, row in members], field, max)
        output.append(record)
    return output


class AggregatePlugin(Plugin[AggregateConfig]):
    plugin_type = "Data_Processing"
    plugin_name = "aggregate"
    description = "Group rows and compute count, sum, mean, min and max per group."
    config_model = AggregateConfig

    async def run(self, config: AggregateConfig, run: StepRuntime) -> Any:
        if isinstance(config.input, list) and len(config.input) > _THREAD_THRESHOLD:
            return await asyncio.to_thread(_aggregate, config)
        return _aggregate(config)
