"""Schedules and webhook triggers (:mod:`mimir.core.runstore.schedules`).

Revision ID: 0002_schedules
Revises: 0001_runs
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_schedules"
down_revision = "0001_runs"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "schedules",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("spec", sa.Text(), nullable=False),
        sa.Column("paused", sa.Boolean(), nullable=False),
        sa.Column("next_tick_ms", sa.BigInteger(), nullable=True),
        sa.Column("last_tick_ms", sa.BigInteger(), nullable=True),
        sa.Column("last_job_id", sa.String(64), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.Column("updated_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_schedules"),
        sa.UniqueConstraint("name", name="uq_schedules_name"),
    )
    op.create_index("ix_schedules_due", "schedules", ["paused", "next_tick_ms"])
    op.create_table(
        "triggers",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("spec", sa.Text(), nullable=False),
        sa.Column("secret", sa.String(128), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_triggers"),
        sa.UniqueConstraint("name", name="uq_triggers_name"),
    )


def downgrade() -> None:
    op.drop_table("triggers")
    op.drop_index("ix_schedules_due", table_name="schedules")
    op.drop_table("schedules")
