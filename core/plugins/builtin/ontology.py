"""``Ontology.*``: the knowledge graph from pipelines.

- ``Ontology.query`` runs a read-only SPARQL query; ``params`` are substituted for
  ``$name`` placeholders as properly escaped SPARQL terms (a string becomes a literal, a
  number a number, ``{"iri": "..."}`` an IRI), so values from the context never inject
  SPARQL. SELECT answers rows (``[{variable: value}]``, numbers and booleans as such),
  ASK a boolean, CONSTRUCT/DESCRIBE ``[{subject, predicate, object}]``.
- ``Ontology.load`` maps rows (``input``, e.g. ``"{{ rows }}"``) to triples in an
  ontology's graph: ``subject`` is an IRI template (``http://ex/item/{id}``), ``type`` an
  optional class IRI, ``label`` an optional column, ``properties`` predicate IRI → column
  (``"price"``) or ``{column, datatype, iri}``.

Both use the store of the step's data directory (or ``FUSEKI_URL``). The on-disk store
admits one process: where a server holds it (a worker sharing its data directory), the
plugins reach it through that server's SPARQL endpoint at ``MIMIR_API_URL``.

A query's ``SERVICE`` is refused (the step fails) unless the SPARQL federation policy of
the process's settings (``MIMIR_SPARQL_FEDERATION``, ``MIMIR_SPARQL_ALLOW``) allows its
host; ``params`` are substituted before that check (the store makes it).
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from pydantic import Field

from mimir.core.errors import PluginError
from mimir.core.plugins.base import Plugin, PluginConfig, StepRuntime, context_input

# pyoxigraph and the ontology store are imported where used: loading the plugin registry
# (every worker does) must not map Oxigraph into processes that never touch an ontology.
if TYPE_CHECKING:
    import pyoxigraph as ox

    from mimir.core.ontology import OntologyStore

__all__ = ["OntologyLoadPlugin", "OntologyQueryPlugin", "sparql_term"]

_XSD = "http://www.w3.org/2001/XMLSchema#"
_PLACEHOLDER = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")
_NUMERIC = {_XSD + n for n in ("integer", "int", "long", "short", "byte", "nonNegativeInteger",
                              "positiveInteger", "unsignedInt", "unsignedLong")}  # fmt: skip
_DECIMAL = {_XSD + n for n in ("decimal", "double", "float")}


@asynccontextmanager
async def _store(run: StepRuntime) -> AsyncIterator[OntologyStore]:
    """The store of the step's data directory; the server's endpoint when it holds it."""
    from mimir.core.ontology import (
        OntologyError,
        StoreBusyError,
        open_ontology_store,
        open_ontology_store_via_api,
    )
    from mimir.core.settings import Settings

    settings = Settings.from_env().with_(data_dir=run.data_dir)
    try:
        yield await asyncio.to_thread(open_ontology_store, settings)
        return
    except StoreBusyError:
        pass
    except OntologyError as exc:
        raise PluginError(str(exc)) from exc
    remote = await asyncio.to_thread(open_ontology_store_via_api, settings)
    try:
        yield remote
    finally:
        remote.close()


def sparql_term(value: Any) -> str:
    """``value`` as a SPARQL term (escaped literal, number, boolean or ``<iri>``)."""
    import pyoxigraph as ox

    if isinstance(value, dict) and set(value) == {"iri"}:
        return str(ox.NamedNode(str(value["iri"])))
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise PluginError(f"parameter value {value!r} is not a finite number")
        return str(ox.Literal(repr(value), datatype=ox.NamedNode(_XSD + "double")))
    if isinstance(value, str):
        return str(ox.Literal(value))
    raise PluginError(f"parameter value {value!r} must be a string, number, boolean or {{iri}}")


def _python_value(term: dict[str, str]) -> Any:
    value = term["value"]
    datatype = term.get("datatype", "")
    try:
        if datatype in _NUMERIC:
            return int(value)
        if datatype in _DECIMAL:
            return float(value)
    except ValueError:
        return value
    if datatype == _XSD + "boolean":
        return value in ("true", "1")
    return value


class QueryConfig(PluginConfig):
    query: str = Field(min_length=1, description="SPARQL query; $name placeholders for params.")
    params: dict[str, Any] = Field(default_factory=dict, description="Values for $name.")
    ontology: str | None = Field(default=None, description="Only this ontology's graph.")
    limit: int = Field(default=10_000, ge=1, le=100_000, description="Rows at most.")
    timeout: float = Field(default=30.0, gt=0, le=300, description="Seconds.")


class OntologyQueryPlugin(Plugin[QueryConfig]):
    plugin_type = "Ontology"
    plugin_name = "query"
    description = "Run a read-only SPARQL query with $params; SELECT rows go into the context."
    config_model = QueryConfig

    async def run(self, config: QueryConfig, run: StepRuntime) -> Any:
        from mimir.core.ontology import OntologyError

        def substitute(match: re.Match[str]) -> str:
            name = match.group(1)
            return sparql_term(config.params[name]) if name in config.params else match.group(0)

        sparql = _PLACEHOLDER.sub(substitute, config.query)
        try:
            async with _store(run) as store:
                result = await store.run_query(
                    sparql, ontology=config.ontology, row_limit=config.limit, timeout=config.timeout
                )
        except OntologyError as exc:
            raise PluginError(str(exc)) from exc
        if result.kind == "ask":
            return bool(result.boolean)
        if result.kind == "graph":
            return [
                {"subject": t.subject.value, "predicate": t.predicate.value,
                 "object": getattr(t.object, "value", str(t.object))}
                for t in result.triples
            ]  # fmt: skip
        return [{k: _python_value(v) for k, v in row.items()} for row in result.rows]


class PropertyMapping(PluginConfig):
    column: str
    #: XSD datatype IRI (or a short name: integer, decimal, double, boolean, date, string).
    datatype: str | None = None
    #: The column holds an IRI (or an IRI template over the row, like ``subject``).
    iri: bool = False


class LoadConfig(PluginConfig):
    ontology: str = Field(description="Target ontology (name@version or name).")
    input: list[dict[str, Any]] = context_input(description="Rows, e.g. '{{ rows }}'.")
    subject: str = Field(description="IRI template per row, e.g. http://ex/item/{id}.")
    type: str | None = Field(default=None, description="Class IRI given to every subject.")
    label: str | None = Field(default=None, description="Column used as rdfs:label.")
    properties: dict[str, str | PropertyMapping] = Field(
        default_factory=dict, description="Predicate IRI -> column (or {column, datatype, iri})."
    )
    create: bool = Field(default=False, description="Create the ontology if it does not exist.")


def _fill(template: str, row: dict[str, Any], where: str) -> str:
    try:
        return template.format_map({k: str(v) for k, v in row.items()})
    except KeyError as exc:
        raise PluginError(f"{where}: the row has no column {exc.args[0]!r}") from None


def _literal(value: Any, datatype: str | None) -> ox.Literal:
    import pyoxigraph as ox

    if datatype:
        iri = datatype if ":" in datatype and "/" in datatype else _XSD + datatype
        text = json.dumps(value) if isinstance(value, bool) else str(value)
        return ox.Literal(text, datatype=ox.NamedNode(iri))
    if isinstance(value, bool):
        return ox.Literal("true" if value else "false", datatype=ox.NamedNode(_XSD + "boolean"))
    if isinstance(value, int):
        return ox.Literal(str(value), datatype=ox.NamedNode(_XSD + "integer"))
    if isinstance(value, float):
        return ox.Literal(repr(value), datatype=ox.NamedNode(_XSD + "double"))
    return ox.Literal(str(value))


def rows_to_triples(config: LoadConfig) -> list[ox.Triple]:
    """The triples ``config`` maps its rows to."""
    import pyoxigraph as ox

    rdf_type = ox.NamedNode("http://www.w3.org/1999/02/22-rdf-syntax-ns#type")
    label = ox.NamedNode("http://www.w3.org/2000/01/rdf-schema#label")
    triples: list[ox.Triple] = []
    try:
        klass = ox.NamedNode(config.type) if config.type else None
        predicates = {iri: ox.NamedNode(iri) for iri in config.properties}
    except ValueError as exc:
        raise PluginError(f"invalid IRI in the mapping: {exc}") from None
    for index, row in enumerate(config.input):
        where = f"row {index}"
        try:
            subject = ox.NamedNode(_fill(config.subject, row, where))
        except ValueError as exc:
            raise PluginError(f"{where}: subject is not a valid IRI: {exc}") from None
        if klass is not None:
            triples.append(ox.Triple(subject, rdf_type, klass))
        if config.label and row.get(config.label) is not None:
            triples.append(ox.Triple(subject, label, ox.Literal(str(row[config.label]))))
        for iri, spec in config.properties.items():
            mapping = spec if isinstance(spec, PropertyMapping) else PropertyMapping(column=spec)
            if mapping.iri:
                target = (
                    _fill(mapping.column, row, where)
                    if "{" in mapping.column
                    else row.get(mapping.column)
                )
                if target is None:
                    continue
                try:
                    obj: ox.NamedNode | ox.Literal = ox.NamedNode(str(target))
                except ValueError as exc:
                    raise PluginError(f"{where}: {mapping.column} is not an IRI: {exc}") from None
            else:
                if row.get(mapping.column) is None:
                    continue  # a missing value makes no triple
                obj = _literal(row[mapping.column], mapping.datatype)
            triples.append(ox.Triple(subject, predicates[iri], obj))
    return triples


class OntologyLoadPlugin(Plugin[LoadConfig]):
    plugin_type = "Ontology"
    plugin_name = "load"
    description = (
        "Map rows to triples (subject template, type, label, properties) into an ontology."
    )
    config_model = LoadConfig

    async def run(self, config: LoadConfig, run: StepRuntime) -> Any:
        from mimir.core.ontology import OntologyError, OntologyNotFoundError

        triples = rows_to_triples(config)

        def load(store: OntologyStore) -> int:
            try:
                store.get(config.ontology)
            except OntologyNotFoundError:
                if not config.create:
                    raise
                name, _, version = config.ontology.partition("@")
                store.upload(name, b"", version=version or "1", fmt="ntriples")
            return store.add_triples(config.ontology, triples)

        try:
            async with _store(run) as store:
                added = await asyncio.to_thread(load, store)
        except OntologyError as exc:
            raise PluginError(str(exc)) from exc
        return {"ontology": config.ontology, "triples": added, "rows": len(config.input)}
