"""SPARQL query results, independent of the store that produced them, and their
serialisations (SPARQL 1.1 JSON, XML, CSV, TSV; RDF formats for graph results)."""

from __future__ import annotations

import csv
import io
import json
from typing import Any, Literal
from xml.sax.saxutils import escape, quoteattr

import pyoxigraph as ox
from pydantic import BaseModel, ConfigDict, Field

from mimir.core.ontology.formats import resolve_format, serialize_triples

__all__ = [
    "RESULT_MEDIA_TYPES",
    "QueryResult",
    "term_from_json",
    "term_to_json",
]

#: SPARQL results formats by name, with their media types.
RESULT_MEDIA_TYPES: dict[str, str] = {
    "json": "application/sparql-results+json",
    "xml": "application/sparql-results+xml",
    "csv": "text/csv",
    "tsv": "text/tab-separated-values",
}

_XSD_STRING = "http://www.w3.org/2001/XMLSchema#string"
_RDF_LANG_STRING = "http://www.w3.org/1999/02/22-rdf-syntax-ns#langString"


def term_to_json(term: Any) -> dict[str, str]:
    """An Oxigraph term as a SPARQL 1.1 JSON results binding."""
    if isinstance(term, ox.NamedNode):
        return {"type": "uri", "value": term.value}
    if isinstance(term, ox.BlankNode):
        return {"type": "bnode", "value": term.value}
    if isinstance(term, ox.Literal):
        out = {"type": "literal", "value": term.value}
        if term.language:
            out["xml:lang"] = term.language
        elif term.datatype.value != _XSD_STRING:
            out["datatype"] = term.datatype.value
        return out
    if isinstance(term, ox.Triple):  # RDF-star quoted triple
        return {"type": "triple", "value": str(term)}
    raise TypeError(f"not an RDF term: {term!r}")


def term_from_json(data: dict[str, Any]) -> ox.NamedNode | ox.BlankNode | ox.Literal:
    """The inverse of :func:`term_to_json`."""
    kind = data.get("type")
    value = str(data.get("value", ""))
    if kind == "uri":
        return ox.NamedNode(value)
    if kind == "bnode":
        return ox.BlankNode(value)
    lang = data.get("xml:lang")
    if lang:
        return ox.Literal(value, language=lang)
    datatype = data.get("datatype")
    if datatype and datatype != _RDF_LANG_STRING:
        return ox.Literal(value, datatype=ox.NamedNode(datatype))
    return ox.Literal(value)


class QueryResult(BaseModel):
    """What a query answered: rows (SELECT), a boolean (ASK) or triples (CONSTRUCT/DESCRIBE)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    kind: Literal["select", "ask", "graph"]
    variables: list[str] = Field(default_factory=list)
    #: SELECT rows: variable -> SPARQL JSON binding (unbound variables are absent).
    rows: list[dict[str, dict[str, str]]] = Field(default_factory=list)
    boolean: bool | None = None
    #: CONSTRUCT/DESCRIBE triples (Oxigraph terms).
    triples: list[Any] = Field(default_factory=list)
    #: The row limit cut the answer short.
    truncated: bool = False
    elapsed_ms: float = 0.0

    # -- serialisations ---------------------------------------------------------------

    def to_sparql_json(self) -> dict[str, Any]:
        """SPARQL 1.1 Query Results JSON (a graph result as ``{"triples": [...]}``)."""
        if self.kind == "ask":
            return {"head": {}, "boolean": bool(self.boolean)}
        if self.kind == "graph":
            return {
                "head": {"vars": ["subject", "predicate", "object"]},
                "results": {
                    "bindings": [
                        {
                            "subject": term_to_json(t.subject),
                            "predicate": term_to_json(t.predicate),
                            "object": term_to_json(t.object),
                        }
                        for t in self.triples
                    ]
                },
            }
        return {"head": {"vars": self.variables}, "results": {"bindings": self.rows}}

    def render(self, fmt: str) -> tuple[bytes, str]:
        """Body and media type in ``fmt``: ``json``, ``xml``, ``csv``, ``tsv`` for rows and
        booleans; an RDF format name (``turtle``, ``ntriples``, ``rdfxml``, ``jsonld``) for
        graph results."""
        if self.kind == "graph":
            info = resolve_format(fmt if fmt not in RESULT_MEDIA_TYPES else "turtle")
            return serialize_triples(self.triples, info), info.media_type
        if fmt == "xml":
            return self._to_xml().encode(), RESULT_MEDIA_TYPES["xml"]
        if fmt in ("csv", "tsv"):
            return self._to_delimited(fmt).encode(), RESULT_MEDIA_TYPES[fmt]
        return json.dumps(self.to_sparql_json()).encode(), RESULT_MEDIA_TYPES["json"]

    def _to_xml(self) -> str:
        out = ['<?xml version="1.0"?>', '<sparql xmlns="http://www.w3.org/2005/sparql-results#">']
        if self.kind == "ask":
            out.append("<head/>")
            out.append(f"<boolean>{'true' if self.boolean else 'false'}</boolean>")
        else:
            out.append("<head>")
            out.extend(f"<variable name={quoteattr(v)}/>" for v in self.variables)
            out.append("</head><results>")
            for row in self.rows:
                out.append("<result>")
                for name, term in row.items():
                    value = escape(term["value"])
                    if term["type"] == "uri":
                        inner = f"<uri>{value}</uri>"
                    elif term["type"] == "bnode":
                        inner = f"<bnode>{value}</bnode>"
                    else:
                        attrs = ""
                        if "xml:lang" in term:
                            attrs = f" xml:lang={quoteattr(term['xml:lang'])}"
                        elif "datatype" in term:
                            attrs = f" datatype={quoteattr(term['datatype'])}"
                        inner = f"<literal{attrs}>{value}</literal>"
                    out.append(f"<binding name={quoteattr(name)}>{inner}</binding>")
                out.append("</result>")
            out.append("</results>")
        out.append("</sparql>")
        return "\n".join(out)

    def _to_delimited(self, fmt: str) -> str:
        buffer = io.StringIO()
        if self.kind == "ask":
            return "_askResult\r\n" + ("true" if self.boolean else "false") + "\r\n"
        if fmt == "csv":
            writer = csv.writer(buffer, lineterminator="\r\n")
            writer.writerow(self.variables)
            for row in self.rows:
                writer.writerow(
                    [
                        (f"_:{row[v]['value']}" if row[v]["type"] == "bnode" else row[v]["value"])
                        if v in row
                        else ""
                        for v in self.variables
                    ]
                )
            return buffer.getvalue()
        lines = ["\t".join(f"?{v}" for v in self.variables)]
        for row in self.rows:
            lines.append("\t".join(_tsv_term(row[v]) if v in row else "" for v in self.variables))
        return "\n".join(lines) + "\n"


def _tsv_term(term: dict[str, str]) -> str:
    """A binding in SPARQL TSV syntax (N-Triples-like)."""
    return str(term_from_json(term))
