"""Object-store landing: a persisted listing cursor per landing prefix and a claim per object version.

An object store cannot list "what is new since": every listing returns every key. The cursor (a
high-water mark of last-modified times, below which everything is registered) bounds which listed
objects need a look at all; a claim per (key, ETag) — a row whose primary key the database keeps
unique — makes sure each object version is registered by exactly one worker, across restarts and
hosts. A claim is a lease: a worker that dies before finishing leaves it to be taken over.
"""

from __future__ import annotations

import hashlib

from sqlalchemy import and_, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from tarn.metastore.db import Database, now
from tarn.metastore.schema import landing_claims, landing_cursors


def claim_id(source: str, key: str, etag: str) -> str:
    return hashlib.sha256(f"{source}\0{key}\0{etag}".encode()).hexdigest()


class LandingRepo:
    """Tables created by migration 0004."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # ---------------------------------------------------------------- cursor
    def cursor(self, source: str) -> float:
        """The high-water mark of ``source`` (0 before its first listing)."""
        with self.db.read() as conn:
            row = conn.execute(select(landing_cursors.c.high_water).where(landing_cursors.c.source == source)).first()
        return float(row[0]) if row else 0.0

    def advance(self, source: str, high_water: float) -> None:
        """Move the cursor forward (never back: another worker may be ahead)."""
        with self.db.tx() as conn:
            res = conn.execute(
                update(landing_cursors)
                .where(and_(landing_cursors.c.source == source, landing_cursors.c.high_water < high_water))
                .values(high_water=high_water, updated_at=now())
            )
            if res.rowcount:
                return
            exists = conn.execute(select(landing_cursors.c.source).where(landing_cursors.c.source == source)).first()
            if exists is None:
                try:
                    with conn.begin_nested():
                        conn.execute(
                            insert(landing_cursors).values(source=source, high_water=high_water, updated_at=now())
                        )
                except IntegrityError:
                    pass  # another worker created it meanwhile; its mark is as good

    # ---------------------------------------------------------------- claims
    def done_since(self, source: str, since: float) -> set[str]:
        """Ids of the claims of ``source`` finished, for objects last modified at or after ``since``."""
        with self.db.read() as conn:
            rows = conn.execute(
                select(landing_claims.c.id).where(
                    and_(
                        landing_claims.c.source == source,
                        landing_claims.c.last_modified >= since,
                        landing_claims.c.done_at.is_not(None),
                    )
                )
            ).all()
        return {str(r[0]) for r in rows}

    def claim(
        self,
        source: str,
        key: str,
        etag: str,
        *,
        size: int,
        last_modified: float,
        holder: str,
        lease_seconds: float,
    ) -> str | None:
        """Claim one object version: its claim id if this call got it, None if it is done or leased
        by another worker."""
        cid = claim_id(source, key, etag)
        t = now()
        try:
            with self.db.tx() as conn:
                conn.execute(
                    insert(landing_claims).values(
                        id=cid,
                        source=source,
                        key=key,
                        etag=etag,
                        size=size,
                        last_modified=last_modified,
                        holder=holder,
                        lease_until=t + lease_seconds,
                    )
                )
            return cid
        except IntegrityError:
            pass
        with self.db.tx() as conn:  # taken before: take it over if its lease ran out unfinished
            res = conn.execute(
                update(landing_claims)
                .where(
                    and_(
                        landing_claims.c.id == cid,
                        landing_claims.c.done_at.is_(None),
                        landing_claims.c.lease_until < t,
                    )
                )
                .values(holder=holder, lease_until=t + lease_seconds)
            )
        return cid if res.rowcount else None

    def finish(self, cid: str, object_id: str | None) -> None:
        with self.db.tx() as conn:
            conn.execute(
                update(landing_claims).where(landing_claims.c.id == cid).values(done_at=now(), object_id=object_id)
            )

    def release(self, cid: str, holder: str) -> None:
        """Give a claim up unfinished (the registration failed): the next listing tries again."""
        with self.db.tx() as conn:
            conn.execute(
                update(landing_claims)
                .where(and_(landing_claims.c.id == cid, landing_claims.c.holder == holder))
                .values(lease_until=0.0)
            )

    def forget_before(self, source: str, before: float) -> int:
        """Delete finished claims of objects last modified before ``before`` (the cursor covers them)."""
        with self.db.tx() as conn:
            res = conn.execute(
                delete(landing_claims).where(
                    and_(
                        landing_claims.c.source == source,
                        landing_claims.c.last_modified < before,
                        landing_claims.c.done_at.is_not(None),
                    )
                )
            )
        return int(res.rowcount or 0)
