"""Snapshots of the stores (mimir.core.backup.stores), on real files and a real PostgreSQL.

- a SQLite copy taken while writers commit is one consistent state, the writers are not
  held up for the copy, and the source stays usable (still in WAL mode);
- trigger secrets are redacted in a copy and leave no trace in its bytes;
- ``pg_dump``/``pg_restore`` carry a run store to another database, replacing what it held
  (PostgreSQL missing is a failure, as for every PostgreSQL test);
- an Oxigraph store dumped to N-Quads and loaded into a new store has the same quads and
  answers a query the same.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pyoxigraph as ox
import pytest
from sqlalchemy import Engine, insert, select, text

from mimir.core.backup import stores
from mimir.core.backup.manifest import BackupError
from mimir.core.ontology.triplestores import OxigraphStore
from mimir.core.runstore.db import head_revision, known_revisions, make_engine, migrate
from mimir.core.runstore.schedules import schedules, triggers
from mimir.core.twin.models import Twin
from mimir.core.twin.store import SCHEMA_VERSION, TwinStore
from tests.pg import create_database, drop_database

# -- SQLite -----------------------------------------------------------------------------


def _ledger(path: Path, journal: str) -> None:
    """A database whose invariant is ``total == SUM(entries.amount)`` after every commit."""
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA journal_mode={journal}")
    db.execute("CREATE TABLE entries (id INTEGER PRIMARY KEY, amount INTEGER, pad BLOB)")
    db.execute("CREATE TABLE total (value INTEGER)")
    db.execute("INSERT INTO total VALUES (0)")
    with db:
        for _ in range(5000):
            db.execute("INSERT INTO entries (amount, pad) VALUES (1, randomblob(700))")
        db.execute("UPDATE total SET value = (SELECT SUM(amount) FROM entries)")
    db.close()


def _consistent(path: Path) -> tuple[int, int]:
    db = sqlite3.connect(path)
    try:
        total = db.execute("SELECT value FROM total").fetchone()[0]
        summed = db.execute("SELECT SUM(amount) FROM entries").fetchone()[0]
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return total, summed
    finally:
        db.close()


class _Writer:
    """A thread that keeps committing ledger entries (the invariant holds at each commit)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.commits = 0
        self.longest = 0.0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        db = sqlite3.connect(self.path, timeout=30.0)
        try:
            while not self._stop.is_set():
                started = time.monotonic()
                with db:
                    db.execute("INSERT INTO entries (amount, pad) VALUES (2, randomblob(700))")
                    db.execute("UPDATE total SET value = value + 2")
                self.longest = max(self.longest, time.monotonic() - started)
                self.commits += 1
        except BaseException as exc:
            self.error = exc
        finally:
            db.close()

    def __enter__(self) -> _Writer:
        self._thread.start()
        deadline = time.monotonic() + 10
        while self.commits < 20:
            assert time.monotonic() < deadline, "the writer did not start"
            time.sleep(0.001)
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        assert self.error is None, self.error


@pytest.mark.parametrize("journal", ["wal", "delete"])
def test_sqlite_copy_during_writes_is_consistent(tmp_path: Path, journal: str) -> None:
    source = tmp_path / "source.db"
    _ledger(source, journal)
    copy = tmp_path / "out" / "copy.db"
    with _Writer(source) as writer:
        before = writer.commits
        stores.sqlite_copy(source, copy, pages=16)
        during = writer.commits - before
        after_copy = writer.commits
        deadline = time.monotonic() + 10
        while writer.commits < after_copy + 20:  # the source keeps taking writes
            assert time.monotonic() < deadline, "the source stopped taking writes"
            time.sleep(0.001)
    total, summed = _consistent(copy)
    assert total == summed >= 5000
    assert sorted(p.name for p in copy.parent.iterdir()) == ["copy.db"]  # one file, no -wal
    if journal == "wal":
        # Readers never block a WAL writer: commits went on during the copy.
        assert during > 0
        assert sqlite3.connect(source).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    source_total, source_sum = _consistent(source)
    assert source_total == source_sum > total


def test_sqlite_copy_of_the_run_store_engine_keeps_it_usable(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'mimir.db'}")
    migrate(engine)
    _add_triggers(engine, 3)
    stores.sqlite_copy(tmp_path / "mimir.db", tmp_path / "copy" / "mimir.db")
    _add_triggers(engine, 2, start=3)
    copy_engine = make_engine(f"sqlite:///{tmp_path / 'copy' / 'mimir.db'}")
    try:
        assert stores.runstore_counts(copy_engine) == {"runs": 0, "schedules": 0, "triggers": 3}
        assert stores.runstore_counts(engine)["triggers"] == 5
        assert stores.runstore_schema(copy_engine) == {
            "engine": "sqlite",
            "alembic_revision": head_revision(),
        }
        assert head_revision() == known_revisions()[-1]
    finally:
        copy_engine.dispose()
        engine.dispose()


def test_sqlite_copy_refuses_a_missing_source(tmp_path: Path) -> None:
    with pytest.raises(BackupError, match="no SQLite database"):
        stores.sqlite_copy(tmp_path / "nope.db", tmp_path / "copy.db")


def _add_triggers(engine: Engine, count: int, start: int = 0) -> list[str]:
    secrets = []
    with engine.begin() as connection:
        for i in range(start, start + count):
            secret = f"s3cret-{i:04d}-" + "x" * 30
            secrets.append(secret)
            connection.execute(
                insert(triggers).values(
                    id=f"t{i}", name=f"trigger-{i}", spec="{}", secret=secret, created_ms=i
                )
            )
    return secrets


def test_redaction_leaves_no_secret_in_the_copy(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'mimir.db'}")
    migrate(engine)
    secrets = _add_triggers(engine, 4)
    copy = tmp_path / "copy" / "mimir.db"
    stores.sqlite_copy(tmp_path / "mimir.db", copy)
    assert all(secret.encode() in copy.read_bytes() for secret in secrets)

    assert stores.redact_triggers_sqlite(copy) == 4

    raw = copy.read_bytes()
    assert not any(secret.encode() in raw for secret in secrets)
    assert not any(copy.parent.glob("*-journal"))
    db = sqlite3.connect(copy)
    assert {row[0] for row in db.execute("SELECT secret FROM triggers")} == {stores.REDACTED}
    assert db.execute("SELECT COUNT(*) FROM triggers").fetchone()[0] == 4
    db.close()
    # The live store keeps its secrets.
    with engine.connect() as connection:
        assert sorted(connection.execute(select(triggers.c.secret)).scalars()) == secrets
    rows = stores.trigger_rows_redacted(engine)
    assert [row["name"] for row in rows] == [f"trigger-{i}" for i in range(4)]
    assert {row["secret"] for row in rows} == {stores.REDACTED}
    engine.dispose()


def test_redaction_of_a_database_without_triggers(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    sqlite3.connect(path).execute("CREATE TABLE x (a)").connection.close()
    assert stores.redact_triggers_sqlite(path) == 0


def test_twin_schema_and_count(tmp_path: Path) -> None:
    store = TwinStore(tmp_path / "twins.sqlite3")
    store.add_twin(Twin(name="plant", entities=[]))
    copy = tmp_path / "copy" / "twins.sqlite3"
    stores.sqlite_copy(store.path, copy)
    assert stores.twins_count(copy) == 1
    assert stores.twins_schema(copy) == {
        "user_version": SCHEMA_VERSION,
        "supported": SCHEMA_VERSION,
    }


# -- PostgreSQL -------------------------------------------------------------------------


@pytest.fixture
def two_databases(postgres_url: str) -> Iterator[tuple[str, str]]:
    first, second = create_database(postgres_url), create_database(postgres_url)
    try:
        yield first, second
    finally:
        drop_database(first)
        drop_database(second)


def test_libpq_url_keeps_the_password_off_the_command_line() -> None:
    url, env = stores.libpq_url("postgresql+psycopg://mimir:p%40ss w0rd@db.example:5433/runs")
    assert url == "postgresql://mimir@db.example:5433/runs"
    assert env == {"PGPASSWORD": "p@ss w0rd"}
    assert stores.libpq_url("postgresql+psycopg://mimir@db/runs?sslmode=require") == (
        "postgresql://mimir@db/runs?sslmode=require",
        {},
    )
    with pytest.raises(BackupError, match="not a PostgreSQL URL"):
        stores.libpq_url("sqlite:///x.db")


def test_pg_dump_and_restore_round_trip(two_databases: tuple[str, str], tmp_path: Path) -> None:
    source_url, target_url = two_databases
    source, target = make_engine(source_url), make_engine(target_url)
    try:
        migrate(source)
        secrets = _add_triggers(source, 3)
        with source.begin() as connection:
            connection.execute(
                insert(schedules).values(
                    id="s1", name="nightly", spec="{}", paused=False, version=0,
                    created_ms=1, updated_ms=1,
                )
            )  # fmt: skip
        # The target already has a run store with other data: the restore replaces it.
        migrate(target)
        _add_triggers(target, 1, start=90)

        full = tmp_path / "full.dump"
        stores.pg_dump(source_url, full)
        assert full.read_bytes().startswith(b"PGDMP")
        stores.pg_restore(target_url, full)
        assert stores.runstore_counts(target) == {"runs": 0, "schedules": 1, "triggers": 3}
        with target.connect() as connection:
            assert sorted(connection.execute(select(triggers.c.secret)).scalars()) == secrets
        assert stores.runstore_schema(target) == {
            "engine": "postgresql",
            "alembic_revision": head_revision(),
        }

        # Without secrets: the table's definition, not its rows.
        redacted = tmp_path / "redacted.dump"
        stores.pg_dump(source_url, redacted, exclude_table_data=["triggers"])
        assert not any(secret.encode() in redacted.read_bytes() for secret in secrets)
        stores.pg_restore(target_url, redacted)
        assert stores.runstore_counts(target) == {"runs": 0, "schedules": 1, "triggers": 0}
        with target.connect() as connection:  # the restored schema takes rows again
            connection.execute(text("SELECT id, secret FROM triggers")).all()
    finally:
        source.dispose()
        target.dispose()


def test_pg_restore_of_a_damaged_dump_changes_nothing(
    two_databases: tuple[str, str], tmp_path: Path
) -> None:
    _, target_url = two_databases
    target = make_engine(target_url)
    try:
        migrate(target)
        _add_triggers(target, 2)
        damaged = tmp_path / "damaged.dump"
        damaged.write_bytes(b"PGDMP" + b"\0" * 100)
        with pytest.raises(BackupError, match="pg_restore"):
            stores.pg_restore(target_url, damaged)
        assert stores.runstore_counts(target)["triggers"] == 2
    finally:
        target.dispose()


# -- Oxigraph ---------------------------------------------------------------------------

_LABEL = "http://www.w3.org/2000/01/rdf-schema#label"
_QUERY = """SELECT ?g ?s ?label WHERE { GRAPH ?g { ?s <http://www.w3.org/2000/01/rdf-schema#label>
?label } } ORDER BY ?g ?s ?label"""


def _answer(store: ox.Store) -> list[tuple[str, ...]]:
    return [tuple(str(term) for term in row) for row in store.query(_QUERY)]  # type: ignore[union-attr]


def test_oxigraph_dump_and_load_keep_every_quad(tmp_path: Path) -> None:
    live = OxigraphStore(tmp_path / "oxigraph")
    for graph in range(3):
        document = "\n".join(
            f'<http://ex.org/{graph}/{i}> <{_LABEL}> "n{i}"@en .\n'
            f"<http://ex.org/{graph}/{i}> <http://ex.org/p> _:b{i} .\n"
            f'_:b{i} <http://ex.org/v> "{i}"^^<http://www.w3.org/2001/XMLSchema#integer> .'
            for i in range(200)
        )
        live.load(
            f"http://ex.org/graph/{graph}", document.encode(), ox.RdfFormat.N_TRIPLES, base_iri=None
        )
    expected = len(live._store)
    assert expected == 3 * 600

    dump = tmp_path / "staging" / "ontologies" / "dataset.nq"
    assert stores.dump_oxigraph(live, dump) == expected
    assert [p.name for p in dump.parent.iterdir()] == ["dataset.nq"]  # checkpoint removed
    # The live store is still open and writable.
    live.put_graph("http://ex.org/graph/new", [])
    live.update(
        "INSERT DATA { GRAPH <http://ex.org/g4> { <http://a> <http://b> <http://c> } }", timeout=5
    )

    restored_dir = tmp_path / "restored"
    assert stores.load_nquads(dump, restored_dir) == expected
    assert stores.count_quads(restored_dir) == expected
    restored = ox.Store.read_only(str(restored_dir))
    live_answer = _answer(ox.Store.read_only(str(_checkpoint(live, tmp_path))))
    assert _answer(restored) == live_answer
    assert len(live_answer) == 600
    live.close()


def _checkpoint(live: OxigraphStore, tmp_path: Path) -> Path:
    path = tmp_path / "check"
    live.backup(path)
    return path


def test_load_nquads_refuses_a_store_that_has_data(tmp_path: Path) -> None:
    source = tmp_path / "d.nq"
    source.write_text("<http://a> <http://b> <http://c> <http://g> .\n")
    target = tmp_path / "store"
    target.mkdir()
    (target / "x").write_text("x")
    with pytest.raises(BackupError, match="not empty"):
        stores.load_nquads(source, target)
    bad = tmp_path / "bad.nq"
    bad.write_text("<http://a> <http://b> .\n")
    with pytest.raises(BackupError, match=r"bad\.nq"):
        stores.load_nquads(bad, tmp_path / "new")
