"""Build a twin from an ontology graph: its individuals become entities (type, label,
numeric properties read as the flow's figures) and the object properties between them
become relationships, each with its role in the flow (the twin's ``roles``, else the
default for the property's name). What had to be assumed is listed in the twin's
``warnings``, never silently: an entity without a capacity is unbounded, one without
demand has none, a relationship whose property has no role carries nothing.

:func:`diff_twins` says what changed between two builds (a re-sync)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pyoxigraph as ox

from mimir.core.twin.models import Entity, Relationship, Role, Twin, default_role

__all__ = ["FIGURES", "diff_twins", "twin_from_triples"]

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
#: Entity field -> numeric property local names (lower case, without ``_`` and ``-``)
#: that give it, the first found wins.
FIGURES: dict[str, tuple[str, ...]] = {
    "capacity": (
        "capacity",
        "maxcapacity",
        "capacityperday",
        "throughputcapacity",
        "productioncapacity",
    ),
    "demand": ("demand", "demandrate", "baselinedemand", "dailydemand", "load"),
    "inventory": ("inventory", "initialinventory", "stock", "onhand"),
    "buffer": ("buffer", "buffersize", "storagecapacity", "maxinventory"),
    "lead_time": ("leadtime", "transittime", "deliverytime"),
    "target_stock": ("targetstock", "safetystock", "basestock", "reorderlevel"),
    "mtbf": ("mtbf", "meantimebetweenfailures"),
    "mttr": ("mttr", "meantimetorepair"),
}
#: Most entities a warning names before "and N more".
_NAMED = 5


def _key(name: str) -> str:
    return name.lower().replace("_", "").replace("-", "")


def _some(names: list[str]) -> str:
    shown = ", ".join(names[:_NAMED])
    return shown + (f" and {len(names) - _NAMED} more" if len(names) > _NAMED else "")


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
    roles: dict[str, Role] | None = None,
) -> Twin:
    """The twin of an ontology graph's individuals. ``roles`` maps property local names
    (or IRIs) to their role in the flow; others get the default for their name."""
    roles = dict(roles or {})
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
    unbounded: list[str] = []
    for iri in individuals:
        props = numbers.get(iri, {})
        lowered = {_key(k): v for k, v in props.items()}
        figures: dict[str, float] = {}
        for field, names in FIGURES.items():
            value = next((lowered[n] for n in names if n in lowered), None)
            if value is not None and value >= 0:
                figures[field] = value
        if figures.get("mtbf", 0) <= 0 or figures.get("mttr", 0) <= 0:
            figures.pop("mtbf", None)
            figures.pop("mttr", None)
        kinds = [t for t in types[iri] if t != _OWL + "NamedIndividual"]
        label = labels.get(iri, _local(iri))
        if "capacity" not in figures:
            unbounded.append(label)
        entities.append(
            Entity.model_validate(
                {
                    "id": iri,
                    "type": _local(kinds[0]) if kinds else "Entity",
                    "label": label,
                    "properties": props,
                    **figures,
                }
            )
        )
    known = set(individuals)
    relationships = []
    for s, p, o in links:
        if s not in known or o not in known or s == o:
            continue
        kind = _local(p)
        role = roles.get(p) or roles.get(kind) or default_role(kind)
        relationships.append(Relationship(source=s, target=o, type=kind, role=role))
    warnings = []
    if unbounded:
        warnings.append(
            f"{len(unbounded)} entities have no capacity and are modelled as unbounded: "
            + _some(unbounded)
        )
    ignored = sorted({r.type for r in relationships if r.role == "none"})
    if ignored:
        warnings.append(
            "relationships carry nothing in the flow (declare their role in roles): "
            + _some(ignored)
        )
    if not any(r.role in ("supplies", "supplied_by") for r in relationships) and entities:
        warnings.append("no relationship supplies another entity: nothing flows between them")
    return Twin(
        name=name,
        ontology_id=ontology_id,
        description=description,
        entities=entities,
        relationships=relationships,
        roles={_local(k): v for k, v in roles.items()},
        warnings=warnings,
    )


_COMPARED = (
    "type",
    "label",
    "capacity",
    "demand",
    "inventory",
    "buffer",
    "lead_time",
    "target_stock",
    "mtbf",
    "mttr",
    "inputs",
)


def diff_twins(old: Twin, new: Twin) -> dict[str, Any]:
    """What changed from ``old`` to ``new``: entities added, removed and changed (field ->
    ``[old, new]``), relationships added and removed."""
    before, after = old.entity_index(), new.entity_index()
    changed = []
    for eid in before.keys() & after.keys():
        a, b = before[eid], after[eid]
        fields = {
            name: [getattr(a, name), getattr(b, name)]
            for name in _COMPARED
            if getattr(a, name) != getattr(b, name)
        }
        if fields:
            changed.append({"id": eid, "label": b.label, "fields": fields})

    def links(twin: Twin) -> set[tuple[str, str, str, str]]:
        return {(r.source, r.type, r.target, twin.role_of(r)) for r in twin.relationships}

    old_links, new_links = links(old), links(new)

    def as_dicts(items: set[tuple[str, str, str, str]]) -> list[dict[str, str]]:
        return [{"source": s, "type": t, "target": o, "role": r} for s, t, o, r in sorted(items)]

    return {
        "entities": {
            "added": sorted(after.keys() - before.keys()),
            "removed": sorted(before.keys() - after.keys()),
            "changed": sorted(changed, key=lambda c: c["id"]),
        },
        "relationships": {
            "added": as_dicts(new_links - old_links),
            "removed": as_dicts(old_links - new_links),
        },
        "unchanged": not (after.keys() ^ before.keys() or changed or old_links ^ new_links),
    }
