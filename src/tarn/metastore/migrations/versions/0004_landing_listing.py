"""object-store landing: listing cursors and per-object claims

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    existing = set(sa.inspect(op.get_bind()).get_table_names())
    if "landing_cursors" not in existing:
        op.create_table(
            "landing_cursors",
            sa.Column("source", sa.String(length=512), nullable=False),
            sa.Column("high_water", sa.Float(), nullable=False),
            sa.Column("updated_at", sa.Float(), nullable=False),
            sa.PrimaryKeyConstraint("source"),
        )
    if "landing_claims" not in existing:
        op.create_table(
            "landing_claims",
            sa.Column("id", sa.String(length=64), nullable=False),
            sa.Column("source", sa.String(length=512), nullable=False),
            sa.Column("key", sa.Text(), nullable=False),
            sa.Column("etag", sa.String(length=128), nullable=False),
            sa.Column("size", sa.BigInteger(), nullable=False),
            sa.Column("last_modified", sa.Float(), nullable=False),
            sa.Column("holder", sa.String(length=160), nullable=False),
            sa.Column("lease_until", sa.Float(), nullable=False),
            sa.Column("done_at", sa.Float(), nullable=True),
            sa.Column("object_id", sa.String(length=32), nullable=True),
            sa.PrimaryKeyConstraint("id"),
        )
        op.create_index("ix_landing_claims_source", "landing_claims", ["source", "last_modified"])


def downgrade() -> None:
    op.drop_index("ix_landing_claims_source", table_name="landing_claims")
    op.drop_table("landing_claims")
    op.drop_table("landing_cursors")
