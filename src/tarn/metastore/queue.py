"""The message queue, stored in the metastore, with SQS semantics.

* ``send`` makes a message visible at once (or after a delay).
* ``receive`` hands out the oldest visible message and hides it for the visibility timeout;
  each receive increments ``receive_count`` and issues a new receipt handle.
* ``delete`` (ack) needs the current receipt; a stale receipt (the visibility expired and the
  message was received again) is refused, so only the current holder can ack.
* ``change_visibility`` extends the lease (heartbeat) or schedules a retry (backoff).
* ``dead_letter`` moves a message to the dead-letter queue; ``redrive`` brings it back.

Receives are atomic: ``BEGIN IMMEDIATE`` on SQLite, ``FOR UPDATE SKIP LOCKED`` on PostgreSQL.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, and_, delete, func, insert, or_, select, update

from tarn.errors import NotFoundError, StateError
from tarn.metastore.db import Database, now
from tarn.metastore.schema import queue_messages

READY = "ready"
INFLIGHT = "inflight"
DEAD = "dead"


@dataclass(frozen=True)
class Message:
    id: int
    queue: str
    object_id: str | None
    group_id: str | None
    body: dict[str, Any]
    state: str
    visible_at: float
    receive_count: int
    receipt: str | None
    enqueued_at: float
    last_error: str | None
    dead_at: float | None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _msg(row: Any) -> Message:
    return Message(**dict(row._mapping))


class QueueRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    def send(
        self,
        conn: Connection,
        queue: str,
        body: dict[str, Any],
        *,
        object_id: str | None = None,
        delay: float = 0,
        group: str | None = None,
    ) -> int:
        t = now()
        res = conn.execute(
            insert(queue_messages).values(
                queue=queue,
                object_id=object_id,
                group_id=group,
                body=body,
                state=READY,
                visible_at=t + delay,
                receive_count=0,
                enqueued_at=t,
            )
        )
        pk = res.inserted_primary_key
        assert pk is not None
        return int(pk[0])

    def receive(self, queue: str, visibility_timeout: float, max_receives: int) -> tuple[Message | None, list[Message]]:
        """Receive one visible message. Also returns messages that were dead-lettered on the way:
        ones whose receive count had already reached ``max_receives`` (their holders crashed)."""
        got, dead = self.receive_many(queue, 1, visibility_timeout, max_receives)
        return (got[0] if got else None), dead

    def receive_many(
        self, queue: str, n: int, visibility_timeout: float, max_receives: int
    ) -> tuple[list[Message], list[Message]]:
        """Receive up to ``n`` visible messages in one transaction (SQS's MaxNumberOfMessages), at
        most one per FIFO group: a group's later messages stay blocked while an earlier one is
        ready or in flight. Also returns the messages dead-lettered on the way."""
        dead: list[Message] = []
        while True:
            with self.db.tx() as conn:
                t = now()
                earlier = queue_messages.alias("earlier")
                blocked = (
                    select(earlier.c.id)
                    .where(
                        and_(
                            earlier.c.queue == queue_messages.c.queue,
                            earlier.c.group_id == queue_messages.c.group_id,
                            earlier.c.id < queue_messages.c.id,
                            earlier.c.state.in_([READY, INFLIGHT]),
                        )
                    )
                    .exists()
                )
                q = (
                    select(queue_messages)
                    .where(
                        and_(
                            queue_messages.c.queue == queue,
                            queue_messages.c.state.in_([READY, INFLIGHT]),
                            queue_messages.c.visible_at <= t,
                            or_(queue_messages.c.group_id.is_(None), ~blocked),
                        )
                    )
                    .order_by(queue_messages.c.visible_at, queue_messages.c.id)
                    .limit(n)
                )
                if not self.db.is_sqlite:
                    q = q.with_for_update(skip_locked=True)
                rows = conn.execute(q).all()
                if not rows:
                    return [], dead
                got: list[Message] = []
                expired = False
                for row in rows:
                    m = _msg(row)
                    if m.receive_count >= max_receives:
                        reason = (
                            f"received {m.receive_count} times without being acknowledged "
                            "(the worker holding it crashed or timed out)"
                        )
                        conn.execute(
                            update(queue_messages)
                            .where(queue_messages.c.id == m.id)
                            .values(state=DEAD, dead_at=t, receipt=None, last_error=m.last_error or reason)
                        )
                        dead.append(m)
                        expired = True
                        continue
                    receipt = uuid.uuid4().hex
                    values = {
                        "state": INFLIGHT,
                        "visible_at": t + visibility_timeout,
                        "receive_count": m.receive_count + 1,
                        "receipt": receipt,
                    }
                    conn.execute(update(queue_messages).where(queue_messages.c.id == m.id).values(**values))
                    got.append(Message(**{**m.to_dict(), **values}))
                if got or not expired:
                    return got, dead
                # Every candidate was dead-lettered: look again (a dead message unblocks its group).

    def _holder(self, conn: Connection, msg_id: int, receipt: str) -> None:
        row = conn.execute(
            select(queue_messages.c.receipt, queue_messages.c.state).where(queue_messages.c.id == msg_id)
        ).first()
        if row is None:
            raise StateError(f"message {msg_id} no longer exists (already acknowledged)")
        if row.receipt != receipt or row.state != INFLIGHT:
            raise StateError(
                f"message {msg_id}: the receipt is stale (the visibility timeout expired and it was received again)"
            )

    def delete(self, conn: Connection, msg_id: int, receipt: str) -> None:
        self._holder(conn, msg_id, receipt)
        conn.execute(delete(queue_messages).where(queue_messages.c.id == msg_id))

    def delete_many(self, conn: Connection, held: list[tuple[int, str]]) -> list[int]:
        """Acknowledge several messages (id, receipt); returns the ids not deleted because their
        receipt is stale or they are gone (each such ack is refused, as ``delete`` refuses it)."""
        if not held:
            return []
        rows = conn.execute(
            select(queue_messages.c.id, queue_messages.c.receipt, queue_messages.c.state).where(
                queue_messages.c.id.in_([i for i, _ in held])
            )
        ).all()
        current = {r.id: r.receipt for r in rows if r.state == INFLIGHT}
        ok = [i for i, receipt in held if current.get(i) == receipt]
        if ok:
            conn.execute(delete(queue_messages).where(queue_messages.c.id.in_(ok)))
        return [i for i, _ in held if i not in set(ok)]

    def change_visibility(
        self, conn: Connection, msg_id: int, receipt: str, delay: float, error: str | None = None
    ) -> None:
        self._holder(conn, msg_id, receipt)
        values: dict[str, Any] = {"visible_at": now() + delay}
        if error is not None:
            values["last_error"] = error
            values["state"] = READY
            values["receipt"] = None
        conn.execute(update(queue_messages).where(queue_messages.c.id == msg_id).values(**values))

    def release(self, conn: Connection, msg_id: int, receipt: str) -> None:
        """Give a message back at once (graceful shutdown), without counting it as a failure."""
        self._holder(conn, msg_id, receipt)
        conn.execute(
            update(queue_messages)
            .where(queue_messages.c.id == msg_id)
            .values(
                state=READY,
                visible_at=now(),
                receipt=None,
                receive_count=func.max(queue_messages.c.receive_count - 1, 0)
                if self.db.is_sqlite
                else func.greatest(queue_messages.c.receive_count - 1, 0),
            )
        )

    def dead_letter(self, conn: Connection, msg_id: int, receipt: str, error: str) -> None:
        self._holder(conn, msg_id, receipt)
        conn.execute(
            update(queue_messages)
            .where(queue_messages.c.id == msg_id)
            .values(state=DEAD, dead_at=now(), receipt=None, last_error=error)
        )

    def redrive(self, conn: Connection, msg_id: int) -> Message:
        row = conn.execute(select(queue_messages).where(queue_messages.c.id == msg_id)).first()
        if row is None:
            raise NotFoundError(f"no message {msg_id} in the queue", hint="'tarn dlq list' shows the DLQ")
        m = _msg(row)
        if m.state != DEAD:
            raise StateError(f"message {msg_id} is not in the dead-letter queue (state {m.state})")
        conn.execute(
            update(queue_messages)
            .where(queue_messages.c.id == msg_id)
            .values(state=READY, visible_at=now(), receive_count=0, receipt=None, dead_at=None)
        )
        return m

    def purge_dead(self, conn: Connection, msg_id: int) -> None:
        conn.execute(delete(queue_messages).where(and_(queue_messages.c.id == msg_id, queue_messages.c.state == DEAD)))

    def get(self, msg_id: int) -> Message:
        with self.db.read() as conn:
            row = conn.execute(select(queue_messages).where(queue_messages.c.id == msg_id)).first()
        if row is None:
            raise NotFoundError(f"no message {msg_id}", hint="'tarn dlq list' shows the dead-letter queue")
        return _msg(row)

    def for_object(self, object_id: str) -> Message | None:
        with self.db.read() as conn:
            row = conn.execute(select(queue_messages).where(queue_messages.c.object_id == object_id).limit(1)).first()
        return _msg(row) if row else None

    def list(self, queue: str, state: str | None = None, limit: int = 100) -> list[Message]:
        q = select(queue_messages).where(queue_messages.c.queue == queue).order_by(queue_messages.c.id).limit(limit)
        if state:
            q = q.where(queue_messages.c.state == state)
        with self.db.read() as conn:
            return [_msg(r) for r in conn.execute(q)]

    def depth(self, queue: str) -> dict[str, int]:
        with self.db.read() as conn:
            rows = conn.execute(
                select(queue_messages.c.state, func.count())
                .where(queue_messages.c.queue == queue)
                .group_by(queue_messages.c.state)
            )
            counts = {r[0]: int(r[1]) for r in rows}
        return {s: counts.get(s, 0) for s in (READY, INFLIGHT, DEAD)}
