"""Consistent snapshots of Mimir's stores, taken while they are in use, and their loads.

- SQLite (the run store, the ontology catalog, twins): :func:`sqlite_copy`, SQLite's online
  backup API, a few pages at a time so writers keep committing; in WAL mode the copy
  reads one snapshot throughout (a read transaction held on the source connection), in
  rollback-journal mode a copy that keeps being restarted by writers finishes in one step.
- PostgreSQL: :func:`pg_dump` (custom format, one snapshot) and :func:`pg_restore`; the
  client binaries come from ``PATH`` or ``/usr/lib/postgresql/*/bin``, the password goes
  through ``PGPASSWORD``, never the command line.
- Oxigraph: :func:`dump_oxigraph` (a checkpoint of the store, dumped as N-Quads) and
  :func:`load_nquads` (a new store directory from such a dump).
- Trigger secrets: :func:`redact_triggers_sqlite` overwrites them in a copy.

Plus what the manifest says about them: counts and schema versions.
"""

from __future__ import annotations

import glob
import logging
import os
import shutil
import sqlite3
import subprocess
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import pyoxigraph as ox
from sqlalchemy import Engine, func, select
from sqlalchemy.engine import URL, make_url

from mimir.core.backup.manifest import BackupError
from mimir.core.runstore.schedules import REDACTED_SECRET

__all__ = [
    "REDACTED",
    "SQLITE_COPY_PAGES",
    "Backupable",
    "count_quads",
    "dump_oxigraph",
    "find_pg_binary",
    "insert_trigger_rows",
    "libpq_url",
    "load_nquads",
    "pg_dump",
    "pg_restore",
    "redact_triggers_sqlite",
    "runstore_counts",
    "runstore_schema",
    "sqlite_copy",
    "sqlite_count",
    "trigger_rows_redacted",
    "twins_count",
    "twins_schema",
    "twins_user_version",
]

logger = logging.getLogger(__name__)

#: What a trigger's secret becomes in an archive taken without secrets (such a trigger
#: authenticates nothing until it is given a new secret).
REDACTED = REDACTED_SECRET
#: Pages copied per step of :func:`sqlite_copy` (4 KiB pages: 4 MiB per step).
SQLITE_COPY_PAGES = 1024
#: Seconds :func:`sqlite_copy` pauses between steps (writers take the lock meanwhile).
SQLITE_COPY_PAUSE = 0.005
#: Restarts (a writer changed the source) after which the copy finishes in one step.
SQLITE_COPY_RESTARTS = 3
#: Seconds a ``pg_dump`` or ``pg_restore`` may take.
PG_TIMEOUT = 6 * 3600.0


class Backupable(Protocol):
    """A triple store that can checkpoint itself (``OxigraphStore``, ``pyoxigraph.Store``)."""

    def backup(self, directory: Any, /) -> None: ...


class _Restarted(Exception):
    """A writer changed the source while :func:`sqlite_copy` was copying it step by step."""


# -- SQLite -----------------------------------------------------------------------------


def _is_wal(connection: sqlite3.Connection) -> bool:
    return str(connection.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal"


def sqlite_copy(src: Path, dst: Path, *, pages: int = SQLITE_COPY_PAGES) -> None:
    """Copy the SQLite database ``src`` to ``dst`` (replaced) through the online backup API,
    while other connections keep reading and writing it.

    The copy goes :data:`SQLITE_COPY_PAGES` pages at a time with a pause between steps, so
    a writer is never held up for longer than one step. A WAL-mode source is read from one
    snapshot (a read transaction is held on the source connection; WAL readers do not block
    writers), so the copy is consistent however busy the database is. A rollback-journal
    source is copied step by step too, but a write between two steps restarts SQLite's copy:
    after :data:`SQLITE_COPY_RESTARTS` restarts it finishes in one step (writers wait for
    that step). ``dst`` is left as one self-contained file (rollback journal, no ``-wal``).
    """
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise BackupError(f"no SQLite database at {src}")
    dst.parent.mkdir(parents=True, exist_ok=True)
    for stale in (dst, *_sidecars(dst)):
        stale.unlink(missing_ok=True)
    source = sqlite3.connect(f"{src.resolve().as_uri()}?mode=ro", uri=True, timeout=30.0)
    target = sqlite3.connect(dst, timeout=30.0)
    try:
        wal = _is_wal(source)
        if wal:
            # One snapshot for the whole copy: the backup uses this read transaction.
            source.execute("BEGIN")
            source.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
        restarts = 0
        last_remaining: list[int] = []

        def progress(_status: int, remaining: int, _total: int) -> None:
            nonlocal restarts
            if last_remaining and remaining >= last_remaining[0]:
                restarts += 1
                if restarts >= SQLITE_COPY_RESTARTS:
                    raise _Restarted
            last_remaining[:] = [remaining]

        try:
            source.backup(target, pages=pages, progress=progress, sleep=SQLITE_COPY_PAUSE)
        except _Restarted:
            logger.info("copy of %s kept restarting (writers); copying it in one step", src)
            source.backup(target, pages=-1)
        if wal:
            source.execute("COMMIT")
        # The copy keeps the source's WAL flag; make it one file of its own.
        target.execute("PRAGMA journal_mode=DELETE")
        check = target.execute("PRAGMA quick_check").fetchone()[0]
        if check != "ok":
            raise BackupError(f"the copy of {src} is damaged: {check}")
    except sqlite3.Error as exc:
        raise BackupError(f"copying the SQLite database {src} failed: {exc}") from exc
    finally:
        target.close()
        source.close()
    for leftover in _sidecars(dst):
        leftover.unlink(missing_ok=True)


def _sidecars(path: Path) -> list[Path]:
    return [path.with_name(path.name + suffix) for suffix in ("-wal", "-shm", "-journal")]


def sqlite_count(path: Path, table: str) -> int:
    """Rows of ``table`` in the SQLite database ``path`` (0 if there is no such table),
    read only."""
    connection = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True)
    try:
        exists = connection.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
        ).fetchone()
        if not exists:
            return 0
        return int(connection.execute(f'SELECT COUNT(*) FROM "{table}"').fetchone()[0])
    finally:
        connection.close()


def redact_triggers_sqlite(path: Path) -> int:
    """Overwrite every trigger secret in the run-store copy ``path`` with :data:`REDACTED`;
    answers how many were. The old values leave no trace in the file: ``secure_delete``
    zeroes what the update frees, ``VACUUM`` rewrites the file, and the journal stays in
    memory."""
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        exists = connection.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'triggers'"
        ).fetchone()
        if not exists:
            return 0
        connection.execute("PRAGMA journal_mode=MEMORY")
        connection.execute("PRAGMA secure_delete=ON")
        connection.execute("BEGIN IMMEDIATE")
        cursor = connection.execute("UPDATE triggers SET secret = ?", (REDACTED,))
        connection.execute("COMMIT")
        connection.execute("VACUUM")
        return int(cursor.rowcount)
    except sqlite3.Error as exc:
        raise BackupError(f"redacting the trigger secrets of {path} failed: {exc}") from exc
    finally:
        connection.close()


# -- PostgreSQL -------------------------------------------------------------------------


def find_pg_binary(name: str) -> str:
    """``pg_dump`` or ``pg_restore``: the newest under ``/usr/lib/postgresql/*/bin`` (a
    newer client reads and writes every older server's dumps), else the one on ``PATH``."""
    candidates = sorted(
        glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
        key=lambda path: (
            int(Path(path).parent.parent.name) if Path(path).parent.parent.name.isdigit() else 0
        ),
    )
    if candidates:
        return candidates[-1]
    found = shutil.which(name)
    if found:
        return found
    raise BackupError(
        f"{name} is not installed: a PostgreSQL run store is backed up and restored with the "
        "PostgreSQL client tools (Debian/Ubuntu: apt install postgresql-client)"
    )


def libpq_url(url: str) -> tuple[str, dict[str, str]]:
    """The SQLAlchemy ``url`` (``postgresql+psycopg://user:pw@host/db``) as a libpq URL
    without its password, and the environment that carries the password."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        raise BackupError(f"not a PostgreSQL URL: {parsed.render_as_string(hide_password=True)}")
    env: dict[str, str] = {}
    if parsed.password is not None:
        env["PGPASSWORD"] = str(parsed.password)
    # URL.set ignores None: build the URL again without the password.
    plain = URL.create(
        "postgresql",
        username=parsed.username,
        host=parsed.host,
        port=parsed.port,
        database=parsed.database,
        query=parsed.query,
    )
    return plain.render_as_string(hide_password=False), env


def _run_pg(command: list[str], env: Mapping[str, str], what: str) -> None:
    full_env = {**os.environ, **env}
    try:
        done = subprocess.run(
            command,
            env=full_env,
            capture_output=True,
            text=True,
            timeout=PG_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BackupError(f"{what} failed: {exc}") from exc
    if done.returncode != 0:
        message = (done.stderr or done.stdout).strip()[-2000:]
        raise BackupError(f"{what} failed (exit {done.returncode}): {message}")


def pg_dump(url: str, dst: Path, *, exclude_table_data: Sequence[str] = ()) -> None:
    """Dump the PostgreSQL database of ``url`` to ``dst`` (custom format, one consistent
    snapshot); the tables of ``exclude_table_data`` keep their definition, not their rows."""
    target, env = libpq_url(url)
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    command = [find_pg_binary("pg_dump"), "--format=custom", "--no-password", f"--file={dst}"]
    command += [f"--exclude-table-data={table}" for table in exclude_table_data]
    command.append(f"--dbname={target}")
    _run_pg(command, env, "pg_dump of the run store")


def pg_restore(url: str, src: Path) -> None:
    """Restore the custom-format dump ``src`` into the database of ``url``, replacing the
    objects it holds, in one transaction (an error leaves the database as it was)."""
    target, env = libpq_url(url)
    command = [
        find_pg_binary("pg_restore"),
        "--clean",
        "--if-exists",
        "--no-owner",
        "--single-transaction",
        "--no-password",
        f"--dbname={target}",
        str(src),
    ]
    _run_pg(command, env, "pg_restore of the run store")


def trigger_rows_redacted(engine: Engine) -> list[dict[str, Any]]:
    """Every row of the ``triggers`` table with its secret replaced by :data:`REDACTED`
    (what a PostgreSQL backup without secrets carries instead of the table's data)."""
    from mimir.core.runstore.schedules import triggers

    with engine.connect() as connection:
        rows = connection.execute(select(triggers).order_by(triggers.c.id)).mappings().all()
    return [{**dict(row), "secret": REDACTED} for row in rows]


def insert_trigger_rows(url: str, rows: Sequence[Mapping[str, Any]]) -> int:
    """Put back the trigger rows a PostgreSQL backup without secrets carried apart (after
    :func:`pg_restore`, which restored the table empty); answers how many."""
    from mimir.core.runstore.db import make_engine
    from mimir.core.runstore.schedules import triggers

    if not rows:
        return 0
    engine = make_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(triggers.delete())
            connection.execute(triggers.insert(), [dict(row) for row in rows])
    finally:
        engine.dispose()
    return len(rows)


# -- Oxigraph ---------------------------------------------------------------------------


def dump_oxigraph(store: Backupable, dst: Path) -> int:
    """Every quad of the on-disk Oxigraph ``store`` in N-Quads at ``dst``; answers how many.

    A checkpoint (``store.backup``) is taken beside ``dst`` and dumped from, streaming, so
    the dump is one consistent state and the live store is never read at length; the
    checkpoint is removed afterwards."""
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    checkpoint = dst.parent / f".oxigraph-checkpoint-{uuid.uuid4().hex[:12]}"
    try:
        try:
            store.backup(checkpoint)
        except Exception as exc:  # OSError from pyoxigraph, an OntologyError from OxigraphStore
            raise BackupError(f"checkpointing the ontology store failed: {exc}") from exc
        try:
            snapshot = ox.Store.read_only(str(checkpoint))
            with open(dst, "wb") as out:
                snapshot.dump(out, ox.RdfFormat.N_QUADS)
                out.flush()
                os.fsync(out.fileno())
            count = len(snapshot)
            del snapshot
        except (OSError, ValueError) as exc:
            raise BackupError(f"dumping the ontology store failed: {exc}") from exc
    finally:
        shutil.rmtree(checkpoint, ignore_errors=True)
    return count


def load_nquads(src: Path, directory: Path) -> int:
    """A new Oxigraph store in ``directory`` (which must not exist or be empty) holding the
    quads of the N-Quads file ``src``; answers how many it holds."""
    directory = Path(directory)
    if directory.exists() and any(directory.iterdir()):
        raise BackupError(f"{directory} is not empty: the ontology store is loaded into a new one")
    directory.mkdir(parents=True, exist_ok=True)
    try:
        store = ox.Store(str(directory))
        store.bulk_load(path=str(src), format=ox.RdfFormat.N_QUADS)
        store.flush()
        count = len(store)
        del store
    except (OSError, ValueError, SyntaxError) as exc:
        raise BackupError(
            f"loading {Path(src).name} into the ontology store failed: {exc}"
        ) from exc
    return count


def count_quads(directory: Path) -> int:
    """Quads of the Oxigraph store in ``directory`` (opened read-only: no one may write it)."""
    store = ox.Store.read_only(str(directory))
    try:
        return len(store)
    finally:
        del store


# -- counts and schema versions ---------------------------------------------------------


def runstore_counts(engine: Engine) -> dict[str, int]:
    """Rows of ``runs``, ``schedules`` and ``triggers`` in the run store of ``engine``."""
    from mimir.core.runstore.runs import runs
    from mimir.core.runstore.schedules import schedules, triggers

    counts: dict[str, int] = {}
    with engine.connect() as connection:
        for name, table in (("runs", runs), ("schedules", schedules), ("triggers", triggers)):
            counts[name] = int(
                connection.execute(select(func.count()).select_from(table)).scalar_one()
            )
    return counts


def runstore_schema(engine: Engine) -> dict[str, Any]:
    """``{"engine": "sqlite"|"postgresql", "alembic_revision": ...}`` of ``engine``'s
    database."""
    from mimir.core.runstore.db import current_revision

    return {"engine": engine.dialect.name, "alembic_revision": current_revision(engine)}


def twins_user_version(path: Path) -> int:
    """``PRAGMA user_version`` of the twin database ``path`` (compare with
    ``mimir.core.twin.store.SCHEMA_VERSION``: a larger one was written by a newer Mimir)."""
    connection = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True)
    try:
        return int(connection.execute("PRAGMA user_version").fetchone()[0])
    finally:
        connection.close()


def twins_schema(path: Path) -> dict[str, int]:
    """``{"user_version": n, "supported": SCHEMA_VERSION}`` of the twin database ``path``."""
    from mimir.core.twin.store import SCHEMA_VERSION

    return {"user_version": twins_user_version(path), "supported": SCHEMA_VERSION}


def twins_count(path: Path) -> int:
    """Twins in the twin database ``path``."""
    return sqlite_count(path, "twins")
