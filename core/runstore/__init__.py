"""The run store: what the cluster remembers (runs with their steps, logs and artifacts;
schedules and triggers; alert rules and fired alerts; the audit log).

A SQL database through SQLAlchemy 2 (Core, synchronous; async callers use
``asyncio.to_thread``) with Alembic migrations applied at server start: SQLite (WAL)
in ``MIMIR_DATA_DIR`` by default, PostgreSQL through ``MIMIR_DATABASE_URL``. The server
owns it; workers reach it only through Redis (the outcome stream, see
:mod:`mimir.core.queue.keys`).

Each part defines its tables on :data:`mimir.core.runstore.db.metadata` in its own module
and adds its own migration under ``migrations/versions``.
"""
