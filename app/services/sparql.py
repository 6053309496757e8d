"""SPARQL answers as table rows (for the Knowledge panel), without Qt.

IRIs are shown by prefix (``rdfs:label``, ``sc:NorthDC``): the prefixes the query declares,
then the common vocabularies, then one named after the last part of a namespace that none
fits (``supply-chain:NorthDC`` for ``http://…/ontology/supply-chain#NorthDC``). The table
says which prefixes it used, and each cell keeps its full value for a tooltip.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "WELL_KNOWN_PREFIXES",
    "SparqlTable",
    "query_prefixes",
    "shorten_iri",
    "sparql_rows",
    "sparql_table",
]

#: Prefixes every table understands, whether or not the query declares them.
WELL_KNOWN_PREFIXES = {
    "rdf": "http://www.w3.org/1999/02/22-rdf-syntax-ns#",
    "rdfs": "http://www.w3.org/2000/01/rdf-schema#",
    "owl": "http://www.w3.org/2002/07/owl#",
    "xsd": "http://www.w3.org/2001/XMLSchema#",
    "skos": "http://www.w3.org/2004/02/skos/core#",
    "dcterms": "http://purl.org/dc/terms/",
}

_PREFIX = re.compile(r"PREFIX\s+([A-Za-z][\w.-]*)?:\s*<([^>\s]*)>", re.IGNORECASE)
#: What may follow the namespace in a readable prefixed name.
_LOCAL = re.compile(r"[A-Za-z0-9_][\w.-]*|")

#: A cell: what the table shows, and the full value (for its tooltip).
Cell = tuple[str, str]


def query_prefixes(query: str) -> dict[str, str]:
    """Prefix → namespace: the well-known ones, then those ``query`` declares (which win)."""
    prefixes = dict(WELL_KNOWN_PREFIXES)
    for name, namespace in _PREFIX.findall(query or ""):
        prefixes[name] = namespace
    return prefixes


def shorten_iri(value: str, prefixes: dict[str, str]) -> str:
    """``prefix:local`` for an IRI under one of ``prefixes`` (the longest namespace wins),
    else ``value`` unchanged."""
    best_name: str | None = None
    best_namespace = ""
    for name, namespace in prefixes.items():
        if (
            namespace
            and len(namespace) > len(best_namespace)
            and value.startswith(namespace)
            and _LOCAL.fullmatch(value[len(namespace) :])
        ):
            best_name, best_namespace = name, namespace
    return value if best_name is None else f"{best_name}:{value[len(best_namespace) :]}"


def _looks_like_iri(value: str) -> bool:
    return value.startswith(("http://", "https://", "urn:"))


@dataclass
class SparqlTable:
    """Columns, ``(shown, full)`` cells, and the prefixes the shown cells use."""

    columns: list[str]
    rows: list[list[Cell]]
    prefixes: dict[str, str] = field(default_factory=dict)


_NAMESPACE_END = re.compile(r"^(.*[/#])([^/#]*)$")


def _namespace_name(namespace: str, taken: dict[str, str]) -> str | None:
    """A prefix for ``namespace`` from its last part (``…/supply-chain#`` → ``supply-chain``)."""
    parts = [p for p in re.split(r"[/#:]", namespace) if p]
    if len(parts) < 2:  # "http:" and a host at least
        return None
    base = re.sub(r"[^\w-]", "-", parts[-1]).strip("-") or "ns"
    if not base[0].isalpha():
        base = "ns-" + base
    name, number = base, 2
    while name in taken and taken[name] != namespace:
        name, number = f"{base}{number}", number + 1
    return name


def sparql_table(answer: Any, prefixes: dict[str, str] | None = None) -> SparqlTable:
    """The answer of SPARQL JSON results, ``{vars, rows}`` or ``{columns, rows}``; with
    ``prefixes``, IRIs shown by prefix (SPARQL JSON says which terms are IRIs; in the other
    shapes, values that look like one)."""
    columns, raw = _terms(answer)
    known = dict(prefixes or {})
    used: dict[str, str] = {}
    rows: list[list[Cell]] = []
    for row in raw:
        cells: list[Cell] = []
        for text, iri in row:
            shown = text
            if prefixes is not None and iri:
                shown = shorten_iri(text, known)
                if shown == text and (match := _NAMESPACE_END.match(text)):
                    name = _namespace_name(match.group(1), known)
                    if name is not None and _LOCAL.fullmatch(match.group(2)):
                        known[name] = match.group(1)
                        shown = f"{name}:{match.group(2)}"
                if shown != text:
                    name = shown.split(":", 1)[0]
                    used[name] = known[name]
            cells.append((shown, text))
        rows.append(cells)
    return SparqlTable(columns, rows, used)


def _terms(answer: Any) -> tuple[list[str], list[list[tuple[str, bool]]]]:
    """Columns and ``(value, is an IRI)`` terms of each row."""
    if isinstance(answer, dict) and "results" in answer and "head" in answer:
        columns = list(answer["head"].get("vars", []))
        rows = []
        for binding in answer["results"].get("bindings", []):
            terms = [binding.get(column) or {} for column in columns]
            rows.append([(str(t.get("value", "")), t.get("type") == "uri") for t in terms])
        return columns, rows
    if isinstance(answer, dict):
        if "boolean" in answer:
            return ["ask"], [[(str(answer["boolean"]), False)]]
        columns = list(answer.get("vars") or answer.get("columns") or [])
        out = []
        for item in answer.get("rows") or answer.get("results") or []:
            if isinstance(item, dict):
                if not columns:
                    columns = list(item)
                values = [str(item.get(c, "")) for c in columns]
            else:
                values = [str(v) for v in item]
            out.append([(v, _looks_like_iri(v)) for v in values])
        return columns, out
    return ["value"], [[(str(answer), False)]]


def sparql_rows(answer: Any) -> tuple[list[str], list[list[str]]]:
    """Columns and rows of full values (see :func:`sparql_table`)."""
    table = sparql_table(answer)
    return table.columns, [[full for _, full in row] for row in table.rows]
