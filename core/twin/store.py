"""Twins, their scenarios and runs, in SQLite in the data directory (``twins.sqlite3``).

A run's record (``runs.body``) keeps its result without the big parts: the per-entity
series are rows of ``run_series`` (one per entity, in the twin's order, and one at
position -1 with the snapshot times and the system totals), the timeline is rows of
``run_timeline`` (the body keeps its first :data:`TIMELINE_HEAD` entries). Reading a run,
a page of its series or of its timeline parses only what it answers; the API's answer of
a run at a resolution, once made, is kept in ``run_views``. Runs written before (schema 1)
hold the whole result in their body and still read the same.
"""

from __future__ import annotations

import bisect
import json
import sqlite3
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self

from mimir.core.errors import MimirError
from mimir.core.twin.models import RunRecord, Scenario, SimulationResult, Twin
from mimir.core.twin.simulation import TwinError

__all__ = [
    "SCHEMA_VERSION",
    "SERIES_METRICS",
    "TIMELINE_HEAD",
    "VIEWS_KEPT",
    "InvalidTwinRequestError",
    "RunNotSucceededError",
    "ScenarioExistsError",
    "TwinConflictError",
    "TwinExistsError",
    "TwinNotFoundError",
    "TwinStore",
    "TwinsFile",
    "new_id",
    "utc_now",
    "window",
]

#: ``PRAGMA user_version`` of the current schema. 0: scenario ids were global (the
#: ``scenarios`` key was ``id`` alone); 1: they are scoped to their twin; 2: a run's series
#: and timeline are rows of their own (``run_series``, ``run_timeline``); 3: answers of a
#: run at a resolution are kept (``run_views``).
SCHEMA_VERSION = 3

#: Views (a run's answer at one resolution) kept per run, the newest.
VIEWS_KEPT = 8

#: The per-entity series of a run, by name.
SERIES_METRICS = ("utilisation", "inventory", "backlog", "throughput")
#: Timeline entries a run's record keeps in its body (the rest: ``run_timeline``).
TIMELINE_HEAD = 100

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
    # position: the entity's place in the twin; -1 (entity NULL): the snapshot times and the
    # system totals.
    """CREATE TABLE IF NOT EXISTS run_series (
    run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    position INTEGER NOT NULL, entity TEXT, body TEXT NOT NULL,
    PRIMARY KEY (run_id, position)
)""",
    "CREATE UNIQUE INDEX IF NOT EXISTS run_series_entity ON run_series (run_id, entity)",
    """CREATE TABLE IF NOT EXISTS run_timeline (
    run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    seq INTEGER NOT NULL, kind TEXT NOT NULL, entity TEXT, body TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
)""",
    "CREATE INDEX IF NOT EXISTS run_timeline_kind ON run_timeline (run_id, kind, seq)",
    "CREATE INDEX IF NOT EXISTS run_timeline_entity ON run_timeline (run_id, entity, seq)",
    # A succeeded run's answer with its series reduced to ``points`` snapshots (JSON).
    """CREATE TABLE IF NOT EXISTS run_views (
    run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    points INTEGER NOT NULL, created_at TEXT NOT NULL, body TEXT NOT NULL,
    PRIMARY KEY (run_id, points)
)""",
)
_FRAME = -1


class TwinNotFoundError(MimirError):
    """No twin, scenario or run with that id."""


class TwinConflictError(MimirError):
    """The id of a new twin, scenario or run is already taken (the API answers 409)."""


class TwinExistsError(TwinConflictError):
    """A twin with that id already exists."""


class ScenarioExistsError(TwinConflictError):
    """The twin already has a scenario with that id."""


class InvalidTwinRequestError(TwinError):
    """A request parameter that does not fit the twin or run (the API answers 422 naming
    ``field``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"invalid request: {field}: {message}")
        self.field = field
        self.message = message


class RunNotSucceededError(TwinConflictError):
    """The run has no result to read (queued, running or failed): the API answers 409."""


def _constraint(exc: sqlite3.IntegrityError) -> str:
    """Which constraint failed: ``PRIMARYKEY``, ``FOREIGNKEY``, ``UNIQUE``, ``NOTNULL`` …"""
    return str(getattr(exc, "sqlite_errorname", "")).removeprefix("SQLITE_CONSTRAINT_")


def utc_now() -> str:
    """ISO 8601 UTC, milliseconds."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_id() -> str:
    """A short random id."""
    return uuid.uuid4().hex[:12]


class TwinsFile:
    """The data directory's ``twins.sqlite3``: one connection per call, foreign keys on,
    each call one transaction. :class:`TwinStore` and the what-if batches' store use it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._ensure_schema()

    @classmethod
    def in_data_dir(cls, data_dir: Path) -> Self:
        """The store of ``data_dir``."""
        return cls(Path(data_dir).expanduser() / "twins.sqlite3")

    def _ensure_schema(self) -> None:
        """Create or upgrade what this store keeps in the file."""

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=10.0)
        db.execute("PRAGMA foreign_keys = ON")
        try:
            with db:
                yield db
        finally:
            db.close()


class TwinStore(TwinsFile):
    """SQLite store of twins, scenarios and runs (one connection per call)."""

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

    def update_twin(self, twin: Twin) -> Twin:
        """Replace a stored twin's body (a re-sync): same id and creation time."""
        with self._connect() as db:
            changed = db.execute(
                "UPDATE twins SET name = ?, body = ? WHERE id = ?",
                (twin.name, twin.model_dump_json(), twin.id),
            ).rowcount
        if not changed:
            raise TwinNotFoundError(f"no twin {twin.id!r}")
        return twin

    def delete_twin(self, twin_id: str) -> None:
        """Remove a twin with its scenarios and runs (their series and timelines too)."""
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
        """Store a new run record (a result given with it is stored as :meth:`finish_run`
        stores one)."""
        run = run.model_copy(update={"created_at": run.created_at or utc_now()})
        body, parts = _split(run)
        try:
            with self._connect() as db:
                db.execute(
                    "INSERT INTO runs (id, twin_id, scenario_id, status, created_at, body) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (run.id, run.twin_id, run.scenario_id, run.status, run.created_at, body),
                )
                if parts is not None:
                    _write_parts(db, run.id, parts)
        except sqlite3.IntegrityError as exc:
            if _constraint(exc) == "PRIMARYKEY":
                raise TwinConflictError(f"a run with id {run.id!r} already exists") from None
            if _constraint(exc) == "FOREIGNKEY":  # the twin was deleted meanwhile
                raise TwinNotFoundError(f"no twin {run.twin_id!r}") from None
            raise
        return run

    def save_run(self, run: RunRecord) -> None:
        """Replace a run record (status and result changes; a result with series has them
        stored apart, replacing any stored before)."""
        body, parts = _split(run)
        with self._connect() as db:
            db.execute(
                "UPDATE runs SET status = ?, body = ? WHERE id = ?", (run.status, body, run.id)
            )
            if parts is not None:
                _write_parts(db, run.id, parts)

    def finish_run(
        self, run_id: str, result: SimulationResult | None, error: str | None = None
    ) -> RunRecord | None:
        """Record a run's outcome; ``None`` if the run is unknown here. The record answered
        carries the result as stored in its body (no series; see :meth:`full_result`)."""
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
        return run.model_copy(update={"result": _summary(result)}) if result else run

    def get_run(self, run_id: str, twin_id: str | None = None) -> RunRecord:
        """Run ``run_id`` (of twin ``twin_id`` if given), its result without the series
        (but for a run stored by schema 1, whose body holds them)."""
        with self._connect() as db:
            row = db.execute("SELECT twin_id, body FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None or (twin_id is not None and row[0] != twin_id):
            raise TwinNotFoundError(
                f"no run {run_id!r}" + (f" of twin {twin_id!r}" if twin_id else "")
            )
        return RunRecord.model_validate_json(row[1])

    def list_runs(self, twin_id: str, *, summaries: bool = False) -> list[RunRecord]:
        """A twin's runs, without their (large) results (``summaries``: with the result as
        the body keeps it, for its metrics)."""
        self.get_twin(twin_id)
        with self._connect() as db:
            rows = db.execute(
                "SELECT body FROM runs WHERE twin_id = ? ORDER BY created_at", (twin_id,)
            ).fetchall()
        runs = [RunRecord.model_validate_json(r[0]) for r in rows]
        if summaries:
            return runs
        return [run.model_copy(update={"result": None}) for run in runs]

    # -- a run's series and timeline ---------------------------------------------------

    def get_view(self, run_id: str, points: int) -> str | None:
        """The answer kept for run ``run_id`` at ``points`` snapshots (JSON), if any."""
        with self._connect() as db:
            row = db.execute(
                "SELECT body FROM run_views WHERE run_id = ? AND points = ?", (run_id, points)
            ).fetchone()
        return None if row is None else str(row[0])

    def put_view(self, run_id: str, points: int, body: str) -> None:
        """Keep a run's answer at ``points`` snapshots (the newest :data:`VIEWS_KEPT`)."""
        try:
            with self._connect() as db:
                db.execute(
                    "INSERT OR REPLACE INTO run_views (run_id, points, created_at, body) "
                    "VALUES (?, ?, ?, ?)",
                    (run_id, points, utc_now(), body),
                )
                db.execute(
                    "DELETE FROM run_views WHERE run_id = ? AND points NOT IN (SELECT points "
                    "FROM run_views WHERE run_id = ? ORDER BY rowid DESC LIMIT ?)",
                    (run_id, run_id, VIEWS_KEPT),
                )
        except sqlite3.IntegrityError:  # the run was deleted meanwhile: nothing to keep
            return

    @staticmethod
    def _result_of(run: RunRecord) -> SimulationResult:
        if run.status != "succeeded" or run.result is None:
            raise RunNotSucceededError(f"run {run.id!r} is {run.status}: it has no result")
        return run.result

    def run_frame(self, run: RunRecord) -> tuple[list[float], dict[str, list[float]]]:
        """The snapshot times of a succeeded run and its system totals."""
        result = self._result_of(run)
        if _inline(result):
            return result.times, result.system
        with self._connect() as db:
            row = db.execute(
                "SELECT body FROM run_series WHERE run_id = ? AND position = ?", (run.id, _FRAME)
            ).fetchone()
        if row is None:
            return [], {}
        frame = json.loads(row[0])
        return frame["times"], frame["system"]

    def run_entities(self, run: RunRecord) -> list[str]:
        """The entities with series in a succeeded run, in the twin's order."""
        result = self._result_of(run)
        if _inline(result):
            return list(result.utilisation)
        with self._connect() as db:
            rows = db.execute(
                "SELECT entity FROM run_series WHERE run_id = ? AND position >= 0 "
                "ORDER BY position",
                (run.id,),
            ).fetchall()
        return [r[0] for r in rows]

    def run_series(
        self, run: RunRecord, entities: Sequence[str] | None = None
    ) -> dict[str, dict[str, list[float]]]:
        """Entity -> metric (:data:`SERIES_METRICS`) -> values at every snapshot, for
        ``entities`` (default: all, in the twin's order); unknown entities are left out."""
        result = self._result_of(run)
        if _inline(result):
            wanted = list(result.utilisation) if entities is None else entities
            return {
                e: {
                    "utilisation": result.utilisation[e],
                    **{m: result.series.get(m, {}).get(e, []) for m in SERIES_METRICS[1:]},
                }
                for e in wanted
                if e in result.utilisation
            }
        with self._connect() as db:
            if entities is None:
                rows = db.execute(
                    "SELECT entity, body FROM run_series WHERE run_id = ? AND position >= 0 "
                    "ORDER BY position",
                    (run.id,),
                ).fetchall()
            else:
                rows = []
                wanted = list(dict.fromkeys(entities))
                for start in range(0, len(wanted), 500):
                    chunk = wanted[start : start + 500]
                    rows += db.execute(
                        "SELECT entity, body FROM run_series WHERE run_id = ? AND position >= 0"
                        f" AND entity IN ({', '.join('?' * len(chunk))})",
                        (run.id, *chunk),
                    ).fetchall()
                order = {e: i for i, e in enumerate(wanted)}
                rows.sort(key=lambda r: order[r[0]])
        return {entity: json.loads(body) for entity, body in rows}

    def full_result(self, run: RunRecord, *, timeline: bool = True) -> SimulationResult:
        """A succeeded run's whole result: every series at every snapshot, the whole
        timeline as far as the run kept it (``timeline=False``: its first entries)."""
        result = self._result_of(run)
        if _inline(result):
            return result
        times, system = self.run_frame(run)
        series = self.run_series(run)
        entries = self.run_timeline(run)[0] if timeline else result.timeline
        return result.model_copy(
            update={
                "times": times,
                "system": system,
                "utilisation": {e: s["utilisation"] for e, s in series.items()},
                "series": {m: {e: s[m] for e, s in series.items()} for m in SERIES_METRICS[1:]},
                "timeline": entries,
            }
        )

    def run_timeline(
        self,
        run: RunRecord,
        *,
        kinds: Sequence[str] = (),
        entity: str | None = None,
        offset: int = 0,
        limit: int | None = None,
    ) -> tuple[list[dict[str, Any]], int]:
        """Timeline entries of a succeeded run in order, only of ``kinds`` (if any) and
        about ``entity`` (if given), from ``offset``, at most ``limit``; and how many
        match in all."""
        result = self._result_of(run)
        if _inline(result):
            matching = [
                t
                for t in result.timeline
                if (not kinds or t.get("kind") in kinds)
                and (entity is None or t.get("entity") == entity)
            ]
            end = None if limit is None else offset + limit
            return matching[offset:end], len(matching)
        where = "run_id = ?"
        args: list[Any] = [run.id]
        if kinds:
            where += f" AND kind IN ({', '.join('?' * len(kinds))})"
            args += list(kinds)
        if entity is not None:
            where += " AND entity = ?"
            args.append(entity)
        with self._connect() as db:
            total = db.execute(f"SELECT count(*) FROM run_timeline WHERE {where}", args).fetchone()
            rows = db.execute(
                f"SELECT body FROM run_timeline WHERE {where} ORDER BY seq LIMIT ? OFFSET ?",
                (*args, -1 if limit is None else limit, offset),
            ).fetchall()
        return [json.loads(r[0]) for r in rows], int(total[0])


def _inline(result: SimulationResult) -> bool:
    """Whether a stored result holds its series in the run's body (schema 1): every
    result has a snapshot at time 0, so only a result stored apart has no times."""
    return bool(result.times)


def _summary(result: SimulationResult) -> SimulationResult:
    """``result`` as the run's body keeps it: no series, the timeline's first entries;
    ``resolution`` says how many the timeline has."""
    resolution = {**result.resolution, "timeline_entries": len(result.timeline)}
    return result.model_copy(
        update={
            "times": [],
            "utilisation": {},
            "series": {},
            "system": {},
            "timeline": result.timeline[:TIMELINE_HEAD],
            "resolution": resolution,
        }
    )


#: A run's parts stored apart: the frame (times, system), per-entity series rows
#: ``(position, entity, body)``, timeline rows ``(seq, kind, entity, body)``.
_Parts = tuple[str, list[tuple[int, str, str]], list[tuple[int, str, str | None, str]]]


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _split(run: RunRecord) -> tuple[str, _Parts | None]:
    """The body of ``run`` and, when its result has series, the parts stored apart."""
    result = run.result
    if result is None or not _inline(result):
        return run.model_dump_json(), None
    body = run.model_copy(update={"result": _summary(result)}).model_dump_json()
    frame = _dumps({"times": result.times, "system": result.system})
    series = [
        (
            position,
            entity,
            _dumps(
                {
                    "utilisation": values,
                    **{m: result.series.get(m, {}).get(entity, []) for m in SERIES_METRICS[1:]},
                }
            ),
        )
        for position, (entity, values) in enumerate(result.utilisation.items())
    ]
    timeline = [
        (seq, str(entry.get("kind", "")), entry.get("entity"), _dumps(entry))
        for seq, entry in enumerate(result.timeline)
    ]
    return body, (frame, series, timeline)


def _write_parts(db: sqlite3.Connection, run_id: str, parts: _Parts) -> None:
    frame, series, timeline = parts
    db.execute("DELETE FROM run_views WHERE run_id = ?", (run_id,))
    db.execute("DELETE FROM run_series WHERE run_id = ?", (run_id,))
    db.execute("DELETE FROM run_timeline WHERE run_id = ?", (run_id,))
    db.execute(
        "INSERT INTO run_series (run_id, position, entity, body) VALUES (?, ?, ?, ?)",
        (run_id, _FRAME, None, frame),
    )
    db.executemany(
        "INSERT INTO run_series (run_id, position, entity, body) VALUES (?, ?, ?, ?)",
        [(run_id, *row) for row in series],
    )
    db.executemany(
        "INSERT INTO run_timeline (run_id, seq, kind, entity, body) VALUES (?, ?, ?, ?, ?)",
        [(run_id, *row) for row in timeline],
    )


def window(times: Sequence[float], start: float | None, end: float | None) -> tuple[int, int]:
    """The slice ``[i, j)`` of ``times`` (sorted) between ``start`` and ``end`` inclusive."""
    i = 0 if start is None else bisect.bisect_left(times, start - 1e-9)
    j = len(times) if end is None else bisect.bisect_right(times, end + 1e-9)
    return i, max(i, j)
