"""Twins, their scenarios and runs, in SQLite in the data directory (``twins.sqlite3``)."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from mimir.core.errors import MimirError
from mimir.core.twin.models import RunRecord, Scenario, SimulationResult, Twin

__all__ = [
    "SCHEMA_VERSION",
    "ScenarioExistsError",
    "TwinConflictError",
    "TwinExistsError",
    "TwinNotFoundError",
    "TwinStore",
    "new_id",
    "utc_now",
]

#: ``PRAGMA user_version`` of the current schema. 0: scenario ids were global (the
#: ``scenarios`` key was ``id`` alone); 1: they are scoped to their twin.
SCHEMA_VERSION = 1

#: Scenario ids are scoped to their twin: two twins may each have a scenario ``baseline``.
_SCENARIO_COLUMNS = """(
    id TEXT NOT NULL, twin_id TEXT NOT NULL REFERENCES twins(id) ON DELETE CASCADE,
    name TEXT NOT NULL, created_at TEXT NOT NULL, body TEXT NOT NULL,
    PRIMARY KEY (twin_id, id)
)"""
_TABLES = (
    """CREATE TABLE IF NOT EXISTS twins (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, created_at TEXT NOT NULL, body TEXT NOT NULL
)""",
    "CREATE TABLE IF NOT EXISTS scenarios " + _SCENARIO_COLUMNS,
    """CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY, twin_id TEXT NOT NULL REFERENCES twins(id) ON DELETE CASCADE,
    scenario_id TEXT NOT NULL, status TEXT NOT NULL, created_at TEXT NOT NULL, body TEXT NOT NULL
)""",
    "CREATE INDEX IF NOT EXISTS scenarios_twin ON scenarios (twin_id, created_at)",
    "CREATE INDEX IF NOT EXISTS runs_twin ON runs (twin_id, created_at)",
)


class TwinNotFoundError(MimirError):
    """No twin, scenario or run with that id."""


class TwinConflictError(MimirError):
    """The id of a new twin, scenario or run is already taken (the API answers 409)."""


class TwinExistsError(TwinConflictError):
    """A twin with that id already exists."""


class ScenarioExistsError(TwinConflictError):
    """The twin already has a scenario with that id."""


def _constraint(exc: sqlite3.IntegrityError) -> str:
    """Which constraint failed: ``PRIMARYKEY``, ``FOREIGNKEY``, ``UNIQUE``, ``NOTNULL`` …"""
    return str(getattr(exc, "sqlite_errorname", "")).removeprefix("SQLITE_CONSTRAINT_")


def utc_now() -> str:
    """ISO 8601 UTC, milliseconds."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_id() -> str:
    """A short random id."""
    return uuid.uuid4().hex[:12]


class TwinStore:
    """SQLite store of twins, scenarios and runs (one connection per call)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._ensure_schema()

    @classmethod
    def in_data_dir(cls, data_dir: Path) -> TwinStore:
        """The store of ``data_dir``."""
        return cls(Path(data_dir).expanduser() / "twins.sqlite3")

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=10.0)
        db.execute("PRAGMA foreign_keys = ON")
        try:
            with db:
                yield db
        finally:
            db.close()

    # -- schema -------------------------------------------------------------------------

    def _ensure_schema(self) -> None:
        """Create the tables, or bring a database of an older schema up to date.

        One ``BEGIN IMMEDIATE`` transaction: other processes (the server, workers) wait
        for it, and a crash midway leaves the file as it was.
        """
        db = sqlite3.connect(self.path, timeout=10.0, isolation_level=None)
        try:
            if db.execute("PRAGMA user_version").fetchone()[0] >= SCHEMA_VERSION:
                return
            # Off (outside the transaction) while a table is rebuilt, as SQLite advises.
            db.execute("PRAGMA foreign_keys = OFF")
            db.execute("BEGIN IMMEDIATE")
            try:
                version = db.execute("PRAGMA user_version").fetchone()[0]
                if version < SCHEMA_VERSION:
                    if version == 0 and self._scenarios_keyed_by_id(db):
                        self._scope_scenario_ids(db)
                    for statement in _TABLES:
                        db.execute(statement)
                    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        finally:
            db.close()

    @staticmethod
    def _scenarios_keyed_by_id(db: sqlite3.Connection) -> bool:
        # PRAGMA table_info: (cid, name, type, notnull, default, pk); no rows: no table.
        key = sorted((row[5], row[1]) for row in db.execute("PRAGMA table_info(scenarios)"))
        return [name for position, name in key if position > 0] == ["id"]

    @staticmethod
    def _scope_scenario_ids(db: sqlite3.Connection) -> None:
        """Schema 0 -> 1: rebuild ``scenarios`` keyed by ``(twin_id, id)`` (ids were
        global, so every row fits the new key)."""
        db.execute("CREATE TABLE scenarios_v1 " + _SCENARIO_COLUMNS)
        db.execute(
            "INSERT INTO scenarios_v1 (id, twin_id, name, created_at, body) "
            "SELECT id, twin_id, name, created_at, body FROM scenarios"
        )
        db.execute("DROP TABLE scenarios")  # its index goes with it; _TABLES makes it again
        db.execute("ALTER TABLE scenarios_v1 RENAME TO scenarios")

    # -- twins ------------------------------------------------------------------------

    def add_twin(self, twin: Twin) -> Twin:
        """Store a new twin (an id and a creation time are given to it)."""
        twin = twin.model_copy(update={"id": twin.id or new_id(), "created_at": utc_now()})
        try:
            with self._connect() as db:
                db.execute(
                    "INSERT INTO twins (id, name, created_at, body) VALUES (?, ?, ?, ?)",
                    (twin.id, twin.name, twin.created_at, twin.model_dump_json()),
                )
        except sqlite3.IntegrityError as exc:
            if _constraint(exc) == "PRIMARYKEY":
                raise TwinExistsError(f"a twin with id {twin.id!r} already exists") from None
            raise
        return twin

    def get_twin(self, twin_id: str) -> Twin:
        """The twin ``twin_id``."""
        with self._connect() as db:
            row = db.execute("SELECT body FROM twins WHERE id = ?", (twin_id,)).fetchone()
        if row is None:
            raise TwinNotFoundError(f"no twin {twin_id!r}")
        return Twin.model_validate_json(row[0])

    def list_twins(self) -> list[Twin]:
        """Every twin, oldest first."""
        with self._connect() as db:
            rows = db.execute("SELECT body FROM twins ORDER BY created_at").fetchall()
        return [Twin.model_validate_json(r[0]) for r in rows]

    def delete_twin(self, twin_id: str) -> None:
        """Remove a twin with its scenarios and runs."""
        self.get_twin(twin_id)
        with self._connect() as db:
            db.execute("DELETE FROM twins WHERE id = ?", (twin_id,))

    # -- scenarios ----------------------------------------------------------------------

    def add_scenario(self, twin_id: str, scenario: Scenario) -> Scenario:
        """Store a scenario of twin ``twin_id``; :class:`ScenarioExistsError` when the twin
        already has one with that id (ids are the twin's own: another twin may use it)."""
        self.get_twin(twin_id)
        scenario = scenario.model_copy(
            update={"id": scenario.id or new_id(), "twin_id": twin_id, "created_at": utc_now()}
        )
        try:
            with self._connect() as db:
                db.execute(
                    "INSERT INTO scenarios (id, twin_id, name, created_at, body) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (
                        scenario.id,
                        twin_id,
                        scenario.name,
                        scenario.created_at,
                        scenario.model_dump_json(),
                    ),
                )
        except sqlite3.IntegrityError as exc:
            if _constraint(exc) == "PRIMARYKEY":
                raise ScenarioExistsError(
                    f"twin {twin_id!r} already has a scenario with id {scenario.id!r}"
                ) from None
            if _constraint(exc) == "FOREIGNKEY":  # the twin was deleted meanwhile
                raise TwinNotFoundError(f"no twin {twin_id!r}") from None
            raise
        return scenario

    def get_scenario(self, twin_id: str, scenario_id: str) -> Scenario:
        """Scenario ``scenario_id`` of twin ``twin_id``."""
        with self._connect() as db:
            row = db.execute(
                "SELECT body FROM scenarios WHERE id = ? AND twin_id = ?", (scenario_id, twin_id)
            ).fetchone()
        if row is None:
            raise TwinNotFoundError(f"twin {twin_id!r} has no scenario {scenario_id!r}")
        return Scenario.model_validate_json(row[0])

    def list_scenarios(self, twin_id: str) -> list[Scenario]:
        """The scenarios of a twin."""
        self.get_twin(twin_id)
        with self._connect() as db:
            rows = db.execute(
                "SELECT body FROM scenarios WHERE twin_id = ? ORDER BY created_at", (twin_id,)
            ).fetchall()
        return [Scenario.model_validate_json(r[0]) for r in rows]

    # -- runs ---------------------------------------------------------------------------

    def add_run(self, run: RunRecord) -> RunRecord:
        """Store a new run record."""
        run = run.model_copy(update={"created_at": run.created_at or utc_now()})
        try:
            with self._connect() as db:
                db.execute(
                    "INSERT INTO runs (id, twin_id, scenario_id, status, created_at, body) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        run.id,
                        run.twin_id,
                        run.scenario_id,
                        run.status,
                        run.created_at,
                        run.model_dump_json(),
                    ),
                )
        except sqlite3.IntegrityError as exc:
            if _constraint(exc) == "PRIMARYKEY":
                raise TwinConflictError(f"a run with id {run.id!r} already exists") from None
            if _constraint(exc) == "FOREIGNKEY":  # the twin was deleted meanwhile
                raise TwinNotFoundError(f"no twin {run.twin_id!r}") from None
            raise
        return run

    def save_run(self, run: RunRecord) -> None:
        """Replace a run record (status and result changes)."""
        with self._connect() as db:
            db.execute(
                "UPDATE runs SET status = ?, body = ? WHERE id = ?",
                (run.status, run.model_dump_json(), run.id),
            )

    def finish_run(
        self, run_id: str, result: SimulationResult | None, error: str | None = None
    ) -> RunRecord | None:
        """Record a run's outcome; ``None`` if the run is unknown here."""
        try:
            run = self.get_run(run_id)
        except TwinNotFoundError:
            return None
        run = run.model_copy(
            update={
                "status": "succeeded" if error is None else "failed",
                "result": result,
                "error": error,
                "seed": result.seed if result else run.seed,
                "finished_at": utc_now(),
            }
        )
        self.save_run(run)
        return run

    def get_run(self, run_id: str, twin_id: str | None = None) -> RunRecord:
        """Run ``run_id`` (of twin ``twin_id`` if given)."""
        with self._connect() as db:
            row = db.execute("SELECT twin_id, body FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None or (twin_id is not None and row[0] != twin_id):
            raise TwinNotFoundError(
                f"no run {run_id!r}" + (f" of twin {twin_id!r}" if twin_id else "")
            )
        return RunRecord.model_validate_json(row[1])

    def list_runs(self, twin_id: str) -> list[RunRecord]:
        """A twin's runs, without their (large) results."""
        self.get_twin(twin_id)
        with self._connect() as db:
            rows = db.execute(
                "SELECT body FROM runs WHERE twin_id = ? ORDER BY created_at", (twin_id,)
            ).fetchall()
        return [
            RunRecord.model_validate_json(r[0]).model_copy(update={"result": None}) for r in rows
        ]
