"""Ontologies and the knowledge graph: an Oxigraph store on disk by default, or an
external SPARQL 1.1 endpoint (``FUSEKI_URL``); one named graph per ontology version."""

from __future__ import annotations

from mimir.core.ontology.catalog import OntologyInfo
from mimir.core.ontology.errors import (
    EndpointError,
    FederationRefusedError,
    OntologyError,
    OntologyExistsError,
    OntologyNotFoundError,
    QueryTimeoutError,
    RdfParseError,
    SparqlError,
    StoreBusyError,
    UnsupportedFormatError,
)
from mimir.core.ontology.federation import FederationPolicy
from mimir.core.ontology.formats import FORMATS, resolve_format
from mimir.core.ontology.results import RESULT_MEDIA_TYPES, QueryResult
from mimir.core.ontology.store import (
    DEFAULT_ROW_LIMIT,
    DEFAULT_TIMEOUT,
    OntologyStats,
    OntologyStore,
    Subgraph,
    close_ontology_stores,
    open_ontology_store,
    open_ontology_store_via_api,
)

__all__ = [
    "DEFAULT_ROW_LIMIT",
    "DEFAULT_TIMEOUT",
    "FORMATS",
    "RESULT_MEDIA_TYPES",
    "EndpointError",
    "FederationPolicy",
    "FederationRefusedError",
    "OntologyError",
    "OntologyExistsError",
    "OntologyInfo",
    "OntologyNotFoundError",
    "OntologyStats",
    "OntologyStore",
    "QueryResult",
    "QueryTimeoutError",
    "RdfParseError",
    "SparqlError",
    "StoreBusyError",
    "Subgraph",
    "UnsupportedFormatError",
    "close_ontology_stores",
    "open_ontology_store",
    "open_ontology_store_via_api",
    "resolve_format",
]
