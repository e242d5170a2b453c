"""The metastore queue has SQS semantics: visibility timeout, receive count, receipts, delays,
dead-lettering after max receives, redrive, and FIFO groups. Real SQLite (WAL) database."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection

from tarn.errors import NotFoundError, StateError
from tarn.metastore import Metastore
from tarn.metastore.db import Database
from tarn.metastore.queue import DEAD, INFLIGHT, READY, QueueRepo

Q = "work"


@pytest.fixture
def meta(tmp_path: Path) -> Iterator[Metastore]:
    m = Metastore(Database.sqlite_url(tmp_path / "metastore.db"))
    yield m
    m.close()


@pytest.fixture
def queue(meta: Metastore) -> QueueRepo:
    return meta.queue


def _send(meta: Metastore, body: dict[str, Any] | None = None, **kw: Any) -> int:
    with meta.db.tx() as conn:
        return meta.queue.send(conn, Q, body or {"n": 1}, **kw)


def test_receive_hides_the_message_and_counts_the_receive(meta: Metastore, queue: QueueRepo) -> None:
    mid = _send(meta, {"k": "v"}, object_id="obj1")
    assert queue.depth(Q) == {READY: 1, INFLIGHT: 0, DEAD: 0}

    msg, dead = queue.receive(Q, visibility_timeout=60, max_receives=3)
    assert dead == []
    assert msg is not None
    assert (msg.id, msg.object_id, msg.body, msg.state, msg.receive_count) == (mid, "obj1", {"k": "v"}, INFLIGHT, 1)
    assert msg.receipt
    assert msg.visible_at >= time.time() + 55
    assert queue.receive(Q, 60, 3) == (None, [])  # invisible while in flight
    assert queue.depth(Q) == {READY: 0, INFLIGHT: 1, DEAD: 0}
    assert queue.receive("other-queue", 60, 3) == (None, [])

    with meta.db.tx() as conn:
        queue.delete(conn, msg.id, msg.receipt)
    assert queue.depth(Q) == {READY: 0, INFLIGHT: 0, DEAD: 0}
    with pytest.raises(StateError, match="no longer exists"), meta.db.tx() as conn:
        queue.delete(conn, msg.id, msg.receipt)


def test_visibility_timeout_expiry_makes_the_message_receivable_again_and_the_old_receipt_stale(
    meta: Metastore, queue: QueueRepo, wait_for: Callable[..., Any]
) -> None:
    _send(meta)
    first, _ = queue.receive(Q, visibility_timeout=0.3, max_receives=5)
    assert first is not None and first.receipt is not None

    second = wait_for(lambda: queue.receive(Q, 60, 5)[0], timeout=5, what="the message to become visible again")
    assert second.id == first.id
    assert second.receive_count == first.receive_count + 1 == 2
    assert second.receipt != first.receipt

    old_receipt = first.receipt
    stale_ops: list[Callable[[Connection], None]] = [
        lambda conn: queue.delete(conn, first.id, old_receipt),
        lambda conn: queue.change_visibility(conn, first.id, old_receipt, 10),
        lambda conn: queue.dead_letter(conn, first.id, old_receipt, "x"),
    ]
    for stale_op in stale_ops:
        with pytest.raises(StateError, match="stale"), meta.db.tx() as conn:
            stale_op(conn)
    assert queue.get(first.id).state == INFLIGHT  # the stale holder changed nothing

    with meta.db.tx() as conn:
        queue.delete(conn, second.id, second.receipt)
    assert queue.depth(Q) == {READY: 0, INFLIGHT: 0, DEAD: 0}


def test_message_received_max_receives_times_without_ack_is_dead_lettered(
    meta: Metastore, queue: QueueRepo, wait_for: Callable[..., Any]
) -> None:
    mid = _send(meta)
    for expected in (1, 2):
        m = wait_for(lambda: queue.receive(Q, 0.1, 2)[0], timeout=5, what=f"receive #{expected}")
        assert m.receive_count == expected

    def dead_lettered() -> list[Any]:
        msg, dead = queue.receive(Q, 0.1, 2)
        assert msg is None
        return dead

    [dead] = wait_for(dead_lettered, timeout=5, what="the third receive to dead-letter it")
    assert dead.id == mid
    stored = queue.get(mid)
    assert stored.state == DEAD
    assert stored.dead_at is not None
    assert stored.last_error is not None and "received 2 times" in stored.last_error
    assert queue.depth(Q) == {READY: 0, INFLIGHT: 0, DEAD: 1}
    assert [m.id for m in queue.list(Q, state=DEAD)] == [mid]


def test_change_visibility_with_an_error_schedules_a_retry(
    meta: Metastore, queue: QueueRepo, wait_for: Callable[..., Any]
) -> None:
    _send(meta)
    m, _ = queue.receive(Q, 60, 5)
    assert m is not None and m.receipt is not None
    with meta.db.tx() as conn:
        queue.change_visibility(conn, m.id, m.receipt, 0.4, error="boom")
    stored = queue.get(m.id)
    assert (stored.state, stored.last_error, stored.receipt) == (READY, "boom", None)
    assert queue.receive(Q, 60, 5) == (None, [])  # not before the delay
    again = wait_for(lambda: queue.receive(Q, 60, 5)[0], timeout=5, what="the retry")
    assert (again.id, again.receive_count, again.last_error) == (m.id, 2, "boom")


def test_heartbeat_extends_the_lease(meta: Metastore, queue: QueueRepo) -> None:
    _send(meta)
    m, _ = queue.receive(Q, 0.5, 5)
    assert m is not None and m.receipt is not None
    with meta.db.tx() as conn:
        queue.change_visibility(conn, m.id, m.receipt, 60)  # no error: still held, just longer
    stored = queue.get(m.id)
    assert (stored.state, stored.receipt) == (INFLIGHT, m.receipt)
    assert stored.visible_at > time.time() + 50


def test_delayed_message_and_oldest_first(meta: Metastore, queue: QueueRepo, wait_for: Callable[..., Any]) -> None:
    late = _send(meta, {"n": "late"}, delay=0.4)
    a = _send(meta, {"n": "a"})
    b = _send(meta, {"n": "b"})
    got = [queue.receive(Q, 60, 5)[0] for _ in range(3)]
    assert [m.id if m else None for m in got] == [a, b, None]
    m = wait_for(lambda: queue.receive(Q, 60, 5)[0], timeout=5, what="the delayed message")
    assert m.id == late


def test_release_gives_the_message_back_without_counting_a_receive(meta: Metastore, queue: QueueRepo) -> None:
    _send(meta)
    m, _ = queue.receive(Q, 60, 5)
    assert m is not None and m.receipt is not None
    with meta.db.tx() as conn:
        queue.release(conn, m.id, m.receipt)
    again, _ = queue.receive(Q, 60, 5)
    assert again is not None and again.id == m.id
    assert again.receive_count == 1


def test_dead_letter_and_redrive(meta: Metastore, queue: QueueRepo) -> None:
    mid = _send(meta)
    m, _ = queue.receive(Q, 60, 5)
    assert m is not None and m.receipt is not None
    with meta.db.tx() as conn:
        queue.dead_letter(conn, m.id, m.receipt, "poison")
    stored = queue.get(mid)
    assert (stored.state, stored.last_error) == (DEAD, "poison")
    assert queue.receive(Q, 60, 5) == (None, [])

    with meta.db.tx() as conn:
        queue.redrive(conn, mid)
    stored = queue.get(mid)
    assert (stored.state, stored.receive_count, stored.dead_at) == (READY, 0, None)
    again, _ = queue.receive(Q, 60, 5)
    assert again is not None and (again.id, again.receive_count) == (mid, 1)

    with pytest.raises(StateError, match="not in the dead-letter queue"), meta.db.tx() as conn:
        queue.redrive(conn, mid)
    with pytest.raises(NotFoundError), meta.db.tx() as conn:
        queue.redrive(conn, mid + 999)
    with pytest.raises(NotFoundError):
        queue.get(mid + 999)


def test_fifo_group_delivers_in_order_one_at_a_time(meta: Metastore, queue: QueueRepo) -> None:
    g1 = _send(meta, {"n": 1}, group="orders")
    g2 = _send(meta, {"n": 2}, group="orders")
    free = _send(meta, {"n": 3})
    first, _ = queue.receive(Q, 60, 5)
    assert first is not None and first.id == g1
    second, _ = queue.receive(Q, 60, 5)
    assert second is not None and second.id == free  # g2 waits behind g1
    assert queue.receive(Q, 60, 5) == (None, [])
    assert first.receipt is not None
    with meta.db.tx() as conn:
        queue.dead_letter(conn, first.id, first.receipt, "poison")  # done with, one way or another
    third, _ = queue.receive(Q, 60, 5)
    assert third is not None and third.id == g2


def test_concurrent_receivers_never_get_the_same_message(meta: Metastore, queue: QueueRepo) -> None:
    n = 60
    with meta.db.tx() as conn:
        sent = {queue.send(conn, Q, {"i": i}) for i in range(n)}
    got: list[int] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            while True:
                m, _ = queue.receive(Q, 60, 5)
                if m is None:
                    return
                with lock:
                    got.append(m.id)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    assert sorted(got) == sorted(sent)  # each exactly once
    assert queue.depth(Q) == {READY: 0, INFLIGHT: n, DEAD: 0}
