"""Objects: every landed file, the one state it is in, and its trail of state changes."""

from __future__ import annotations

import builtins
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, and_, bindparam, func, insert, select, text, update

from tarn.errors import NotFoundError, did_you_mean
from tarn.metastore.db import Database, now
from tarn.metastore.schema import object_events, objects

# The states an object can be in. Terminal ones never change without an explicit redrive.
RECEIVED = "received"
PROCESSING = "processing"
COMMITTED = "committed"
COMMITTED_WITH_QUARANTINE = "committed_with_quarantine"
REJECTED = "rejected"
FAILED = "failed"  # an attempt failed; the message will be retried
DEAD_LETTERED = "dead_lettered"
DUPLICATE = "duplicate"  # same content as an earlier object of the dataset; not ingested again

STATES = (
    RECEIVED,
    PROCESSING,
    COMMITTED,
    COMMITTED_WITH_QUARANTINE,
    REJECTED,
    FAILED,
    DEAD_LETTERED,
    DUPLICATE,
)
TERMINAL = (COMMITTED, COMMITTED_WITH_QUARANTINE, REJECTED, DEAD_LETTERED, DUPLICATE)


def new_id() -> str:
    return uuid.uuid4().hex[:20]


@dataclass(frozen=True)
class ObjectRecord:
    id: str
    dataset: str | None
    landing_path: str
    size: int
    mtime_ns: int
    sha256: str
    raw_path: str | None
    state: str
    arrived_at: float
    updated_at: float
    closed_at: float | None
    attempts: int
    rows_total: int | None
    rows_committed: int | None
    rows_quarantined: int | None
    table_version: int | None
    format: str | None
    error: str | None
    duplicate_of: str | None
    principal: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _record(row: Any) -> ObjectRecord:
    return ObjectRecord(**dict(row._mapping))


class ObjectRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    def insert(self, conn: Connection, **values: Any) -> None:
        t = now()
        values.setdefault("arrived_at", t)
        values.setdefault("updated_at", t)
        values.setdefault("attempts", 0)
        conn.execute(insert(objects).values(**values))
        self.add_event(conn, values["id"], values["state"], values.get("error"))

    def add_event(self, conn: Connection, object_id: str, state: str, message: str | None) -> None:
        conn.execute(insert(object_events).values(object_id=object_id, at=now(), state=state, message=message))

    def set_state(
        self, conn: Connection, object_id: str, state: str, message: str | None = None, **values: Any
    ) -> None:
        conn.execute(update(objects).where(objects.c.id == object_id).values(state=state, updated_at=now(), **values))
        self.add_event(conn, object_id, state, message)

    def set_states(self, conn: Connection, changes: Sequence[tuple[str, str, str | None, dict[str, Any]]]) -> None:
        """``set_state`` for many objects in two statements (executemany): (id, state, message, values),
        every ``values`` with the same keys."""
        if not changes:
            return
        t = now()
        keys = sorted(changes[0][3])
        assert all(sorted(c[3]) == keys for c in changes), "set_states needs the same columns for every object"
        stmt = (
            update(objects)
            .where(objects.c.id == bindparam("_id"))
            .values(state=bindparam("_state"), updated_at=t, **{k: bindparam(f"_v_{k}") for k in keys})
        )
        conn.execute(
            stmt, [{"_id": oid, "_state": state, **{f"_v_{k}": v[k] for k in keys}} for oid, state, _, v in changes]
        )
        conn.execute(
            insert(object_events),
            [{"object_id": oid, "at": t, "state": state, "message": msg} for oid, state, msg, _ in changes],
        )

    def transition(self, object_id: str, state: str, message: str | None = None, **values: Any) -> None:
        with self.db.tx() as conn:
            self.set_state(conn, object_id, state, message, **values)

    def get(self, object_id: str) -> ObjectRecord:
        with self.db.read() as conn:
            row = conn.execute(select(objects).where(objects.c.id == object_id)).first()
            if row is None:
                # Allow unambiguous prefixes, as git does for commit ids.
                rows: Sequence[Any] = []
                if len(object_id) >= 6:  # an unambiguous prefix, as git allows for commit ids
                    rows = conn.execute(select(objects).where(objects.c.id.like(f"{object_id}%")).limit(2)).all()
                if len(rows) == 1:
                    return _record(rows[0])
                recent = [r.id for r in conn.execute(select(objects.c.id).limit(200))]
                raise NotFoundError(
                    f"no object {object_id!r}{did_you_mean(object_id, recent)}",
                    hint="'tarn objects' lists the objects",
                )
            return _record(row)

    def get_many(self, object_ids: Sequence[str]) -> dict[str, ObjectRecord]:
        """The objects with these exact ids (missing ones are left out)."""
        with self.db.read() as conn:
            rows = conn.execute(select(objects).where(objects.c.id.in_(list(object_ids)))).all()
        return {r.id: _record(r) for r in rows}

    def find_by_content(self, conn: Connection, dataset: str, sha256: str) -> ObjectRecord | None:
        row = conn.execute(
            select(objects)
            .where(
                and_(
                    objects.c.dataset == dataset,
                    objects.c.sha256 == sha256,
                    objects.c.state.not_in([DUPLICATE, REJECTED, DEAD_LETTERED]),
                )
            )
            .order_by(objects.c.arrived_at)
            .limit(1)
        ).first()
        return _record(row) if row else None

    def lock_landing(self, conn: Connection, landing_paths: Sequence[str], contents: Sequence[str] = ()) -> None:
        """Serialise registrations of the same landing paths (and, given as ``dataset:sha256``, the same
        contents) for the rest of the transaction. SQLite's write transactions are serial already (BEGIN
        IMMEDIATE); on PostgreSQL (READ COMMITTED) two watchers could both find a file unseen (or a content
        new) and both record it, so each key takes an advisory lock, in sorted order (two transactions
        locking overlapping sets cannot deadlock)."""
        if self.db.is_sqlite:
            return
        keys = {f"tarn.landing.{p}" for p in landing_paths} | {f"tarn.content.{c}" for c in contents}
        for key in sorted(keys):
            conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": key})

    def seen_landing(
        self, conn: Connection, landing_path: str, size: int, mtime_ns: int, sha256: str | None = None
    ) -> bool:
        """Whether this landed file (path, size, mtime; with ``sha256``, also this content) is recorded."""
        cond = [objects.c.landing_path == landing_path, objects.c.size == size, objects.c.mtime_ns == mtime_ns]
        if sha256 is not None:
            cond.append(objects.c.sha256 == sha256)
        return conn.execute(select(objects.c.id).where(and_(*cond)).limit(1)).first() is not None

    def seen_landing_keys(self) -> set[tuple[str, int, int]]:
        with self.db.read() as conn:
            rows = conn.execute(select(objects.c.landing_path, objects.c.size, objects.c.mtime_ns))
            return {(r[0], r[1], r[2]) for r in rows}

    def list(
        self, *, state: str | None = None, dataset: str | None = None, limit: int = 100
    ) -> builtins.list[ObjectRecord]:
        q = select(objects).order_by(objects.c.arrived_at.desc()).limit(limit)
        if state:
            q = q.where(objects.c.state == state)
        if dataset:
            q = q.where(objects.c.dataset == dataset)
        with self.db.read() as conn:
            return [_record(r) for r in conn.execute(q)]

    def counts_by_state(self) -> dict[str, int]:
        with self.db.read() as conn:
            rows = conn.execute(select(objects.c.state, func.count()).group_by(objects.c.state))
            return {r[0]: int(r[1]) for r in rows}

    def events(self, object_id: str) -> builtins.list[dict[str, Any]]:
        with self.db.read() as conn:
            rows = conn.execute(
                select(object_events.c.at, object_events.c.state, object_events.c.message)
                .where(object_events.c.object_id == object_id)
                .order_by(object_events.c.id)
            )
            return [dict(r._mapping) for r in rows]
