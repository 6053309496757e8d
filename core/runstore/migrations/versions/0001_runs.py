"""Runs: the runs table, their steps, log lines and artifacts
(:mod:`mimir.core.runstore.runs`).

Revision ID: 0001_runs
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_runs"
down_revision = None
branch_labels = None
depends_on = None


def _job_id() -> sa.Column[str]:
    return sa.Column("job_id", sa.String(), nullable=False)


def upgrade() -> None:
    moment = sa.DateTime(timezone=True)
    op.create_table(
        "runs",
        _job_id(),
        sa.Column("pipeline", sa.String(), nullable=True),
        sa.Column("type", sa.String(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("queue", sa.String(), nullable=False),
        sa.Column("priority", sa.String(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("max_retries", sa.Integer(), nullable=False),
        sa.Column("timeout", sa.Float(), nullable=True),
        sa.Column("worker_id", sa.String(), nullable=True),
        sa.Column("enqueued_at", moment, nullable=True),
        sa.Column("started_at", moment, nullable=True),
        sa.Column("finished_at", moment, nullable=False),
        sa.Column("duration_ms", sa.Float(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("origin_kind", sa.String(), nullable=True),
        sa.Column("origin_id", sa.String(), nullable=True),
        sa.Column("definition_hash", sa.String(), nullable=True),
        sa.Column("context", sa.Text(), nullable=True),
        sa.Column("options", sa.Text(), nullable=True),
        sa.Column("result", sa.Text(), nullable=True),
        sa.Column("definition", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("job_id", name="pk_runs"),
    )
    for name, columns in (
        ("ix_runs_finished", ["finished_at", "job_id"]),
        ("ix_runs_pipeline_finished", ["pipeline", "finished_at", "job_id"]),
        ("ix_runs_status_finished", ["status", "finished_at", "job_id"]),
        ("ix_runs_pipeline_status_finished", ["pipeline", "status", "finished_at", "job_id"]),
        ("ix_runs_queue_finished", ["queue", "finished_at", "job_id"]),
        ("ix_runs_origin_finished", ["origin_id", "finished_at", "job_id"]),
    ):
        op.create_index(name, "runs", columns)

    def owned_by_run(table: str, *columns: sa.Column[object], key: list[str]) -> None:
        op.create_table(
            table,
            _job_id(),
            *columns,
            sa.ForeignKeyConstraint(
                ["job_id"], ["runs.job_id"], name=f"fk_{table}_job_id_runs", ondelete="CASCADE"
            ),
            sa.PrimaryKeyConstraint("job_id", *key, name=f"pk_{table}"),
        )

    owned_by_run(
        "run_steps",
        sa.Column("step_index", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("plugin", sa.String(), nullable=True),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("duration_ms", sa.Float(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("started_at", moment, nullable=True),
        key=["step_index"],
    )
    owned_by_run(
        "run_logs",
        sa.Column("lines", sa.Text(), nullable=False),
        sa.Column("truncated", sa.Boolean(), nullable=False),
        key=[],
    )
    owned_by_run(
        "run_artifacts",
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("content_type", sa.String(), nullable=False),
        sa.Column("sha256", sa.String(), nullable=True),
        sa.Column("step", sa.String(), nullable=True),
        key=["name"],
    )


def downgrade() -> None:
    op.drop_table("run_artifacts")
    op.drop_table("run_logs")
    op.drop_table("run_steps")
    op.drop_table("runs")
