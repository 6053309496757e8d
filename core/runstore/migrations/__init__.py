"""Alembic migrations of the run store (applied by :func:`mimir.core.runstore.db.migrate`)."""
