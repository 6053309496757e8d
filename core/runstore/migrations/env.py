"""Alembic's environment: migrations run on the connection :func:`migrate` hands over
(``config.attributes["connection"]``), inside its transaction."""

from __future__ import annotations

from alembic import context

from mimir.core.runstore.db import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only `migrate` runs these migrations
    raise RuntimeError("the run store's migrations run through mimir.core.runstore.db.migrate")
context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=True,  # SQLite alters tables by copying them
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
