"""One validation problem, located as precisely as the source allows."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel

__all__ = ["ValidationIssue", "node_position"]


def node_position(
    lines: Mapping[tuple[Any, ...], tuple[int, int]], loc: Sequence[Any]
) -> tuple[int | None, int | None]:
    """The (line, column) of the node at ``loc`` in a YAML document's position map, or of
    the deepest node recorded on the way to it (a missing field points at its parent)."""
    loc = tuple(loc)
    for end in range(len(loc), -1, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return None, None


class ValidationIssue(BaseModel):
    """A single problem found while loading or validating a pipeline.

    ``line`` and ``column`` are 1-based and refer to the YAML source when there is one.
    ``step_index`` is 1-based as people count steps.
    """

    message: str
    line: int | None = None
    column: int | None = None
    step_index: int | None = None
    step_name: str | None = None
    field: str | None = None
    suggestions: list[str] = []

    def __str__(self) -> str:
        parts: list[str] = []
        if self.line is not None:
            where = f"line {self.line}"
            if self.column is not None:
                where += f", column {self.column}"
            parts.append(where)
        if self.step_index is not None:
            step = f"step {self.step_index}"
            if self.step_name:
                step += f" {self.step_name!r}"
            parts.append(step)
        if self.field:
            parts.append(f"field {self.field!r}")
        prefix = ", ".join(parts)
        return f"{prefix}: {self.message}" if prefix else self.message
