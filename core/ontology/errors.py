"""Errors of the ontology store and the knowledge graph::

MimirError
 └── OntologyError                 anything the ontology store refuses or fails at
      ├── OntologyNotFoundError    no ontology (version) with that id
      ├── OntologyExistsError      uploading a name and version that are taken
      ├── RdfParseError            an uploaded document is not valid RDF (``.line``)
      ├── UnsupportedFormatError   a format name or media type we cannot read or write
      ├── SparqlError              a query or update is malformed or refused
      │    ├── QueryTimeoutError   a query ran longer than its time limit
      │    └── FederationRefusedError  SERVICE/LOAD where the federation policy forbids it
      └── EndpointError            the external SPARQL endpoint failed or is unreachable
"""

from __future__ import annotations

from typing import Any

from mimir.core.errors import MimirError

__all__ = [
    "EndpointError",
    "FederationRefusedError",
    "OntologyError",
    "OntologyExistsError",
    "OntologyNotFoundError",
    "QueryTimeoutError",
    "RdfParseError",
    "SparqlError",
    "StoreBusyError",
    "UnsupportedFormatError",
]


class OntologyError(MimirError):
    """Base of the ontology store's errors."""


class OntologyNotFoundError(OntologyError):
    """No ontology (version) matches the id."""


class OntologyExistsError(OntologyError):
    """That ontology name and version already exist."""


class RdfParseError(OntologyError):
    """An RDF document failed to parse; ``line`` and ``column`` say where (1-based) if known."""

    def __init__(self, message: str, line: int | None = None, column: int | None = None) -> None:
        self.line = line
        self.column = column
        super().__init__(message)


class UnsupportedFormatError(OntologyError):
    """A format name or media type that the store cannot read or write."""


class SparqlError(OntologyError):
    """A SPARQL query or update is malformed, or not allowed where it was sent."""


class QueryTimeoutError(SparqlError):
    """A query ran longer than its time limit."""


class FederationRefusedError(SparqlError):
    """A query or update uses ``SERVICE`` or ``LOAD`` where the SPARQL federation policy
    (``MIMIR_SPARQL_FEDERATION``, ``MIMIR_SPARQL_ALLOW``) does not allow it. ``refused``
    lists ``{keyword, iri, host, reason}`` per refused target; ``mode`` is the policy's."""

    def __init__(
        self, message: str, *, refused: list[dict[str, Any]] | None = None, mode: str = "off"
    ) -> None:
        self.refused = list(refused or [])
        self.mode = mode
        super().__init__(message)

    @property
    def detail(self) -> dict[str, Any]:
        return {"federation": self.mode, "refused": self.refused}


class EndpointError(OntologyError):
    """The external SPARQL endpoint (``FUSEKI_URL``) failed or could not be reached."""


class StoreBusyError(EndpointError):
    """The on-disk store is open in another process (one opener at a time)."""
