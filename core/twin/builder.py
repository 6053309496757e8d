"""Build a twin from an ontology graph: its individuals become entities (type, label,
numeric properties) and the object properties between them become relationships."""

from __future__ import annotations

from collections.abc import Iterable

import pyoxigraph as ox

from mimir.core.twin.models import Entity, Relationship, Twin

__all__ = ["twin_from_triples"]

_RDF_TYPE = "http://www.w3.org/1999/02/22-rdf-syntax-ns#type"
_LABEL = "http://www.w3.org/2000/01/rdf-schema#label"
_OWL = "http://www.w3.org/2002/07/owl#"
_RDFS = "http://www.w3.org/2000/01/rdf-schema#"
_RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
#: Types that make a subject part of the schema, not an individual.
_SCHEMA_TYPES = {
    _OWL + name
    for name in (
        "Class",
        "Ontology",
        "Restriction",
        "ObjectProperty",
        "DatatypeProperty",
        "AnnotationProperty",
        "FunctionalProperty",
        "InverseFunctionalProperty",
        "TransitiveProperty",
        "SymmetricProperty",
        "AllDisjointClasses",
    )
} | {_RDFS + "Class", _RDFS + "Datatype", _RDF + "Property"}
_NUMERIC = {
    "http://www.w3.org/2001/XMLSchema#" + name
    for name in (
        "integer",
        "decimal",
        "double",
        "float",
        "int",
        "long",
        "short",
        "byte",
        "nonNegativeInteger",
        "positiveInteger",
        "unsignedInt",
        "unsignedLong",
    )
}
_CAPACITY_NAMES = ("capacity", "maxcapacity", "capacityperday", "throughputcapacity")
_DEMAND_NAMES = ("demand", "load", "throughput", "demandrate", "baselinedemand")


def _local(iri: str) -> str:
    for sep in ("#", "/", ":"):
        if sep in iri:
            iri = iri.rsplit(sep, 1)[-1] or iri
    return iri


def twin_from_triples(
    name: str,
    triples: Iterable[ox.Triple],
    *,
    ontology_id: str | None = None,
    description: str = "",
) -> Twin:
    """The twin of an ontology graph's individuals."""
    types: dict[str, list[str]] = {}
    labels: dict[str, str] = {}
    numbers: dict[str, dict[str, float]] = {}
    links: list[tuple[str, str, str]] = []
    for t in triples:
        if not isinstance(t.subject, ox.NamedNode):
            continue
        subject, predicate = t.subject.value, t.predicate.value
        obj = t.object
        if predicate == _RDF_TYPE and isinstance(obj, ox.NamedNode):
            types.setdefault(subject, []).append(obj.value)
        elif predicate == _LABEL and isinstance(obj, ox.Literal):
            labels.setdefault(subject, obj.value)
        elif isinstance(obj, ox.Literal) and obj.datatype.value in _NUMERIC:
            try:
                numbers.setdefault(subject, {})[_local(predicate)] = float(obj.value)
            except ValueError:
                continue
        elif isinstance(obj, ox.NamedNode):
            links.append((subject, predicate, obj.value))
    individuals = [s for s, ts in types.items() if not any(t in _SCHEMA_TYPES for t in ts)]
    entities = []
    for iri in individuals:
        props = numbers.get(iri, {})
        lowered = {k.lower(): v for k, v in props.items()}
        capacity = next((lowered[n] for n in _CAPACITY_NAMES if n in lowered), 100.0)
        demand = next((lowered[n] for n in _DEMAND_NAMES if n in lowered), capacity / 2)
        kinds = [t for t in types[iri] if t != _OWL + "NamedIndividual"]
        entities.append(
            Entity(
                id=iri,
                type=_local(kinds[0]) if kinds else "Entity",
                label=labels.get(iri, _local(iri)),
                capacity=max(0.0, capacity),
                demand=max(0.0, demand),
                properties=props,
            )
        )
    known = set(individuals)
    relationships = [
        Relationship(source=s, target=o, type=_local(p))
        for s, p, o in links
        if s in known and o in known and s != o
    ]
    return Twin(
        name=name,
        ontology_id=ontology_id,
        description=description,
        entities=entities,
        relationships=relationships,
    )
