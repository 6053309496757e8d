"""SPARQL answers as table rows (for the Knowledge panel), without Qt."""

from __future__ import annotations

from typing import Any

__all__ = ["sparql_rows"]


def sparql_rows(answer: Any) -> tuple[list[str], list[list[str]]]:
    """Columns and rows from SPARQL JSON results, ``{vars, rows}`` or ``{columns, rows}``."""
    if isinstance(answer, dict) and "results" in answer and "head" in answer:
        columns = list(answer["head"].get("vars", []))
        rows = [
            [str((binding.get(c) or {}).get("value", "")) for c in columns]
            for binding in answer["results"].get("bindings", [])
        ]
        return columns, rows
    if isinstance(answer, dict):
        columns = list(answer.get("vars") or answer.get("columns") or [])
        raw = answer.get("rows") or answer.get("results") or []
        rows = []
        for item in raw:
            if isinstance(item, dict):
                if not columns:
                    columns = list(item)
                rows.append([str(item.get(c, "")) for c in columns])
            else:
                rows.append([str(v) for v in item])
        if "boolean" in answer:
            return ["ask"], [[str(answer["boolean"])]]
        return columns, rows
    return ["value"], [[str(answer)]]
