"""Reading and deleting one row by its ``id``, for the run store's tables keyed so
(schedules, triggers, alert rules, alerts)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, Row, Table, delete, select

__all__ = ["delete_by_id", "row_by_id"]


def row_by_id(engine: Engine, table: Table, row_id: str) -> Row[Any] | None:
    """The row of ``table`` whose ``id`` is ``row_id`` (``None``: there is none)."""
    with engine.connect() as connection:
        return connection.execute(select(table).where(table.c.id == row_id)).first()


def delete_by_id(engine: Engine, table: Table, row_id: str) -> bool:
    """Delete the row of ``table`` whose ``id`` is ``row_id`` (one transaction); True when
    there was one."""
    with engine.begin() as connection:
        return bool(connection.execute(delete(table).where(table.c.id == row_id)).rowcount)
