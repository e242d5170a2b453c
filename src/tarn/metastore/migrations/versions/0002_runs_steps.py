"""pipeline runs and steps

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    existing = set(sa.inspect(op.get_bind()).get_table_names())
    if "runs" not in existing:  # RunRepo creates them itself on a metastore that predates this revision
        op.create_table(
            "runs",
            sa.Column("id", sa.String(length=32), nullable=False),
            sa.Column("pipeline", sa.String(length=256), nullable=False),
            sa.Column("kind", sa.String(length=16), nullable=False),
            sa.Column("source", sa.Text(), nullable=True),
            sa.Column("spec_hash", sa.String(length=64), nullable=True),
            sa.Column("state", sa.String(length=16), nullable=False),
            sa.Column("trigger", sa.String(length=32), nullable=False),
            sa.Column("env", sa.String(length=64), nullable=True),
            sa.Column("params", sa.JSON(), nullable=True),
            sa.Column("principal", sa.String(length=128), nullable=False),
            sa.Column("strategy", sa.String(length=16), nullable=True),
            sa.Column("started_at", sa.Float(), nullable=False),
            sa.Column("ended_at", sa.Float(), nullable=True),
            sa.Column("duration_s", sa.Float(), nullable=True),
            sa.Column("attempts", sa.Integer(), nullable=False),
            sa.Column("inputs", sa.JSON(), nullable=True),
            sa.Column("outputs", sa.JSON(), nullable=True),
            sa.Column("error", sa.Text(), nullable=True),
            sa.Column("error_stage", sa.String(length=256), nullable=True),
            sa.PrimaryKeyConstraint("id"),
        )
        op.create_index("ix_runs_pipeline", "runs", ["pipeline", "started_at"])
        op.create_index("ix_runs_state", "runs", ["state"])
    if "steps" not in existing:
        op.create_table(
            "steps",
            sa.Column("run_id", sa.String(length=32), nullable=False),
            sa.Column("idx", sa.Integer(), nullable=False),
            sa.Column("name", sa.String(length=256), nullable=False),
            sa.Column("type", sa.String(length=32), nullable=False),
            sa.Column("state", sa.String(length=16), nullable=False),
            sa.Column("started_at", sa.Float(), nullable=True),
            sa.Column("ended_at", sa.Float(), nullable=True),
            sa.Column("duration_s", sa.Float(), nullable=True),
            sa.Column("rows_in", sa.BigInteger(), nullable=True),
            sa.Column("rows_out", sa.BigInteger(), nullable=True),
            sa.Column("output", sa.String(length=256), nullable=True),
            sa.Column("sql", sa.Text(), nullable=True),
            sa.Column("expectations", sa.JSON(), nullable=True),
            sa.Column("detail", sa.JSON(), nullable=True),
            sa.Column("delta_version", sa.BigInteger(), nullable=True),
            sa.Column("error", sa.Text(), nullable=True),
            sa.PrimaryKeyConstraint("run_id", "idx"),
        )


def downgrade() -> None:
    op.drop_table("steps")
    op.drop_index("ix_runs_state", table_name="runs")
    op.drop_index("ix_runs_pipeline", table_name="runs")
    op.drop_table("runs")
