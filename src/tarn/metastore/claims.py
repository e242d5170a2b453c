"""Once-only claims: the first process to claim a name gets it, every other one is told no.

Used where several ``tarn up`` processes share one metastore and a thing must happen once: a cron tick of a
pipeline (``cron:<pipeline>:<trigger>:<fire time>``), a maintenance pass. A claim is a row with a primary key;
the database's uniqueness decides, so it holds on SQLite and on PostgreSQL alike, with no lease to expire.
"""

from __future__ import annotations

from sqlalchemy import Column, Float, Index, String, Table, delete, insert, select
from sqlalchemy.exc import IntegrityError

from tarn.metastore.db import Database, now
from tarn.metastore.schema import metadata

claims = Table(
    "claims",
    metadata,
    Column("name", String(256), primary_key=True),
    Column("holder", String(160), nullable=False),
    Column("claimed_at", Float, nullable=False),
    Index("ix_claims_claimed_at", "claimed_at"),
)


class ClaimRepo:
    """Claims (table created by migration 0003)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def claim(self, name: str, holder: str) -> bool:
        """True if this call claimed ``name`` (nobody had); False if someone had already."""
        try:
            with self.db.tx() as conn:
                conn.execute(insert(claims).values(name=name, holder=holder, claimed_at=now()))
            return True
        except IntegrityError:
            return False

    def holder(self, name: str) -> str | None:
        with self.db.read() as conn:
            row = conn.execute(select(claims.c.holder).where(claims.c.name == name)).first()
        return str(row[0]) if row else None

    def forget_older_than(self, seconds: float) -> int:
        """Delete claims older than ``seconds`` (they can no longer be contested)."""
        with self.db.tx() as conn:
            res = conn.execute(delete(claims).where(claims.c.claimed_at < now() - seconds))
        return int(res.rowcount or 0)
