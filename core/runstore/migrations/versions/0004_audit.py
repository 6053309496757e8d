"""The audit log (core/runstore/audit.py).

Revision ID: 0004_audit
Revises: 0003_alerts
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_audit"
down_revision = "0003_alerts"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("action", sa.String(200), nullable=False),
        sa.Column("method", sa.String(10), nullable=False),
        sa.Column("route", sa.String(500), nullable=False),
        sa.Column("target", sa.Text(), nullable=False),
        sa.Column("outcome", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.String(64), nullable=True),
        sa.Column("duration_ms", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_audit"),
    )
    op.create_index("ix_audit_at_id", "audit", ["at", "id"])
    op.create_index("ix_audit_actor_at", "audit", ["actor", "at"])
    op.create_index("ix_audit_action_at", "audit", ["action", "at"])


def downgrade() -> None:
    op.drop_index("ix_audit_action_at", table_name="audit")
    op.drop_index("ix_audit_actor_at", table_name="audit")
    op.drop_index("ix_audit_at_id", table_name="audit")
    op.drop_table("audit")
