"""The ontology catalog: name, version, format and timestamps of each uploaded ontology,
kept in SQLite next to the triples (the triple store holds only RDF)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel

from mimir.core.ontology.errors import OntologyExistsError

__all__ = ["OntologyCatalog", "OntologyInfo"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS ontologies (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    version TEXT NOT NULL,
    graph_uri TEXT NOT NULL,
    format TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    triples INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS ontologies_name ON ontologies (name, created_at);
"""


class OntologyInfo(BaseModel):
    """One ontology version as the API shows it."""

    id: str
    name: str
    version: str
    graph_uri: str
    format: str
    description: str = ""
    #: Triples at upload time (``/stats`` counts the live graph).
    triples: int = 0
    created_at: str
    updated_at: str


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class OntologyCatalog:
    """SQLite table of ontology versions (one connection per call: safe across threads)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.executescript(_SCHEMA)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=10.0)
        db.row_factory = sqlite3.Row
        try:
            with db:
                yield db
        finally:
            db.close()

    def add(
        self,
        *,
        ontology_id: str,
        name: str,
        version: str,
        graph_uri: str,
        fmt: str,
        description: str,
        triples: int,
        replace: bool,
    ) -> OntologyInfo:
        """Record an upload; :class:`OntologyExistsError` if taken and not ``replace``."""
        now = _now()
        with self._connect() as db:
            row = db.execute(
                "SELECT created_at FROM ontologies WHERE id = ?", (ontology_id,)
            ).fetchone()
            if row is not None and not replace:
                raise OntologyExistsError(
                    f"ontology {name!r} version {version!r} exists (upload with replace=true "
                    "or choose another version)"
                )
            created = row["created_at"] if row is not None else now
            db.execute(
                "INSERT OR REPLACE INTO ontologies VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (ontology_id, name, version, graph_uri, fmt, description, triples, created, now),
            )
        return OntologyInfo(
            id=ontology_id,
            name=name,
            version=version,
            graph_uri=graph_uri,
            format=fmt,
            description=description,
            triples=triples,
            created_at=created,
            updated_at=now,
        )

    def get(self, ontology_id: str) -> OntologyInfo | None:
        """The version with id ``name@version``, or the newest version of ``name``."""
        with self._connect() as db:
            row = db.execute("SELECT * FROM ontologies WHERE id = ?", (ontology_id,)).fetchone()
            if row is None and "@" not in ontology_id:
                row = db.execute(
                    "SELECT * FROM ontologies WHERE name = ? ORDER BY created_at DESC, rowid DESC"
                    " LIMIT 1",
                    (ontology_id,),
                ).fetchone()
        return OntologyInfo(**dict(row)) if row is not None else None

    def list(self) -> list[OntologyInfo]:
        """Every version, by name then age."""
        with self._connect() as db:
            rows = db.execute("SELECT * FROM ontologies ORDER BY name, created_at").fetchall()
        return [OntologyInfo(**dict(row)) for row in rows]

    def remove(self, ontology_id: str) -> None:
        """Forget a version."""
        with self._connect() as db:
            db.execute("DELETE FROM ontologies WHERE id = ?", (ontology_id,))

    def touch(self, ontology_id: str, triples: int) -> None:
        """Note a change to a version's graph."""
        with self._connect() as db:
            db.execute(
                "UPDATE ontologies SET triples = ?, updated_at = ? WHERE id = ?",
                (triples, _now(), ontology_id),
            )
