"""run owner and heartbeat (stale-run detection); once-only claims (cron ticks, maintenance)

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    columns = {c["name"] for c in sa.inspect(bind).get_columns("runs")}
    with op.batch_alter_table("runs") as batch:
        if "owner" not in columns:
            batch.add_column(sa.Column("owner", sa.String(length=160), nullable=True))
        if "heartbeat_at" not in columns:
            batch.add_column(sa.Column("heartbeat_at", sa.Float(), nullable=True))
    if "claims" not in set(sa.inspect(bind).get_table_names()):
        op.create_table(
            "claims",
            sa.Column("name", sa.String(length=256), nullable=False),
            sa.Column("holder", sa.String(length=160), nullable=False),
            sa.Column("claimed_at", sa.Float(), nullable=False),
            sa.PrimaryKeyConstraint("name"),
        )
        op.create_index("ix_claims_claimed_at", "claims", ["claimed_at"])


def downgrade() -> None:
    op.drop_index("ix_claims_claimed_at", table_name="claims")
    op.drop_table("claims")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("heartbeat_at")
        batch.drop_column("owner")
