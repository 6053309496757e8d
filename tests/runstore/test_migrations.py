"""Migration 0001 creates exactly the tables :mod:`mimir.core.runstore.runs` defines."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Engine, inspect

from mimir.core.runstore.runs import run_artifacts, run_logs, run_steps, runs

TABLES = (runs, run_steps, run_logs, run_artifacts)


def _python_type(type_: Any) -> type:
    return type_.impl.python_type if hasattr(type_, "impl") else type_.python_type


def test_upgrade_from_empty_creates_the_tables_defined_on_metadata(engine: Engine) -> None:
    found = inspect(engine)
    names = set(found.get_table_names())
    assert {t.name for t in TABLES} <= names
    dialect = engine.dialect
    assert dialect.name in {"sqlite", "postgresql"}
    for table in TABLES:
        columns = {c["name"]: c for c in found.get_columns(table.name)}
        assert list(columns) == [c.name for c in table.columns], table.name
        for column in table.columns:
            got = columns[column.name]
            assert got["nullable"] == column.nullable, (table.name, column.name)
            want = _python_type(column.type)
            assert _python_type(got["type"]) is want, (table.name, column.name)
            if dialect.name == "postgresql" and want is datetime:
                assert getattr(got["type"], "timezone", False), (
                    table.name,
                    column.name,
                )  # timestamptz
        pk = found.get_pk_constraint(table.name)
        assert pk["constrained_columns"] == [c.name for c in table.primary_key.columns]
        indexes = {i["name"]: i["column_names"] for i in found.get_indexes(table.name)}
        assert indexes == {
            index.name: [c.name for c in index.columns] for index in table.indexes
        }, table.name
        fks = [
            (fk["constrained_columns"], fk["referred_table"], fk["referred_columns"])
            for fk in found.get_foreign_keys(table.name)
        ]
        assert fks == [
            ([fk.parent.name], fk.column.table.name, [fk.column.name]) for fk in table.foreign_keys
        ], table.name
