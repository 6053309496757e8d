"""The run store's database: its URL, engine and migrations.

:func:`open_database` is what the server calls at start: it makes the engine for
``settings`` and brings the schema to the newest migration (Alembic ``upgrade head``,
run under a lock so two servers starting together migrate once). Every table is
defined on :data:`metadata`; the migrations under ``migrations/versions`` create them.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, MetaData, create_engine, event, inspect
from sqlalchemy.engine import make_url

from mimir.core.settings import Settings

__all__ = [
    "SQLITE_NAME",
    "current_revision",
    "database_url",
    "head_revision",
    "known_revisions",
    "make_engine",
    "metadata",
    "migrate",
    "open_database",
    "redact_database_url",
]

logger = logging.getLogger(__name__)

#: File name of the embedded SQLite database in ``MIMIR_DATA_DIR``.
SQLITE_NAME = "mimir.db"

#: Every table of the run store. Constraint names follow one convention, so a migration
#: can name what it drops or alters on SQLite and PostgreSQL alike.
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

_MIGRATIONS = Path(__file__).with_name("migrations")


def database_url(settings: Settings) -> str:
    """``MIMIR_DATABASE_URL``, or SQLite in the data directory. A bare ``postgresql://``
    URL is given the psycopg 3 driver (the one Mimir installs)."""
    if settings.database_url:
        url = make_url(settings.database_url)
        if url.drivername in {"postgresql", "postgres"}:
            url = url.set(drivername="postgresql+psycopg")
        return url.render_as_string(hide_password=False)
    return f"sqlite:///{settings.data_dir / SQLITE_NAME}"


def redact_database_url(url: str) -> str:
    """``url`` without its password, for logs and answers."""
    return make_url(url).render_as_string(hide_password=True)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL: readers never block the writer; NORMAL is durable across process crashes
    # (an OS crash may lose the last commits, never corrupt the file).
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for ``url``: SQLite in WAL mode with a busy timeout (the file's folder is
    created), or PostgreSQL with pre-ping (a restarted database costs no request)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        kwargs.setdefault("connect_args", {"check_same_thread": False, "timeout": 10})
        engine = create_engine(url, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if parsed.get_driver_name() == "psycopg" and importlib.util.find_spec("psycopg") is None:
        raise RuntimeError(
            "a PostgreSQL run store needs the psycopg driver, which this installation lacks "
            "(the console bundle keeps its runs in SQLite): unset MIMIR_DATABASE_URL, or run "
            "the server from the mimir-aip wheel or image"
        )
    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 10)
    return create_engine(url, **kwargs)


def _alembic_config() -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    return config


def known_revisions() -> list[str]:
    """Every migration this Mimir has, oldest first (a backup whose run store is at a
    revision outside this list was made by a newer Mimir)."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(_alembic_config())
    return [revision.revision for revision in reversed(list(script.walk_revisions()))]


def head_revision() -> str | None:
    """The newest migration (what :func:`migrate` brings a database to)."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_alembic_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    """The migration ``engine``'s database is at (``None``: never migrated)."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest migration. On PostgreSQL an advisory lock makes a
    second server that starts at the same moment wait, then find nothing to do; SQLite
    serialises the writers itself."""
    from alembic import command

    # Alembic logs every plugin it sets up at INFO; its "Running upgrade" lines stay.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    config = _alembic_config()
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.exec_driver_sql("SELECT pg_advisory_xact_lock(8151923)")
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def open_database(settings: Settings, **kwargs: Any) -> Engine:
    """The run store's engine for ``settings``, its schema migrated to the newest version."""
    url = database_url(settings)
    engine = make_engine(url, **kwargs)
    migrate(engine)
    logger.info(
        "run store: %s (%d tables)",
        redact_database_url(url),
        len(inspect(engine).get_table_names()),
    )
    return engine
