"""Values that plugins put in the context and that also answer the original platform's names.

:class:`Rows` is the list of rows ``Input.csv`` returns. It *is* a list (templates, plugins
and JSON see the rows), and it also answers the field names of the original Go platform's
``Input.csv`` result (``rows``, ``row_count``, ``columns``, ``column_count`` …) so that
``{{ data.row_count }}`` works next to ``{{ data.0.name }}``. :func:`origin_view` is how a
value looks to a plugin of the original platform (see :mod:`mimir.core.pipeline.origin`).
:class:`Aliased` is a result mapping that also answers other names for some of its keys
(an ``AI.*`` reply's ``text`` is the original's ``llm_response``) without repeating them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["Aliased", "Rows", "origin_view"]


class Rows(list[Any]):
    """A list of rows with named fields: ``template_fields()`` and :meth:`origin_view`.

    ``meta`` holds the other fields of the original's result (``file_path``,
    ``has_headers``, ``delimiter``); ``rows``, ``row_count``, ``columns`` and
    ``column_count`` are derived from the rows. Copies (``list(rows)``, JSON) are plain lists.
    """

    __slots__ = ("_fields", "meta")

    def __init__(self, rows: Iterable[Any] = (), meta: Mapping[str, Any] | None = None) -> None:
        super().__init__(rows)
        self.meta: dict[str, Any] = dict(meta or {})
        self._fields: dict[str, Any] | None = None

    def template_fields(self) -> Mapping[str, Any]:
        """The original's result fields, computed once (the rows are not changed after)."""
        if self._fields is None:
            columns: list[Any] = []
            rows: list[Any] = list(self)
            if self and all(isinstance(row, Mapping) for row in self):
                columns = list(dict.fromkeys(name for row in self for name in row))
            elif self and all(isinstance(row, list) for row in self):
                # Without headers the original named the columns column_1, column_2 …
                columns = [f"column_{i + 1}" for i in range(max(len(row) for row in self))]
                rows = [dict(zip(columns, row, strict=False)) for row in self]
            self._fields = {
                **self.meta,
                "rows": rows,
                "row_count": len(self),
                "columns": columns,
                "column_count": len(columns),
            }
        return self._fields

    def origin_view(self) -> dict[str, Any]:
        """The mapping the original platform's ``Input.csv`` stored for these rows."""
        return dict(self.template_fields())

    def __reduce__(self) -> Any:  # pickles (and deep-copies) as a plain list of rows
        return (list, (list(self),))


class Aliased(dict[str, Any]):
    """A result mapping whose ``template_fields()`` also answer ``aliases`` (``{alias: key}``).

    It equals, serialises and copies as the plain mapping; only templates see the
    aliases (``{{ reply.llm_response }}`` reads ``reply.text``).
    """

    __slots__ = ("aliases",)

    def __init__(self, data: Mapping[str, Any], aliases: Mapping[str, str]) -> None:
        super().__init__(data)
        self.aliases = {alias: key for alias, key in aliases.items() if key in data}

    def template_fields(self) -> Mapping[str, Any]:
        """Every alias whose key is present, with that key's value."""
        return {alias: self[key] for alias, key in self.aliases.items() if key in self}

    def __reduce__(self) -> Any:  # pickles (and deep-copies) as a plain dict
        return (dict, (dict(self),))


def origin_view(value: Any) -> Any:
    """``value`` as a plugin of the original platform read it from the context.

    The original kept every context value as a mapping: a mapping as it is, anything else
    wrapped as ``{"value": v}``; its ``Input.csv`` result was ``{rows, columns, row_count,
    column_count, …}`` (what :meth:`Rows.origin_view` gives).
    """
    if isinstance(value, Rows):
        return value.origin_view()
    if isinstance(value, Mapping):
        return value
    return {"value": value}
