"""The queue's contract (SQS semantics), identical on SQLite and PostgreSQL: visibility timeout and
receipts, stale receipts refused, retries, delays, dead-lettering after max receives, redrive,
purge, FIFO groups, and concurrent receivers (threads, and processes' worth of engines) that never
get one message twice."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from tarn.errors import NotFoundError, StateError
from tarn.metastore import Metastore
from tarn.metastore.queue import DEAD, INFLIGHT, READY, Message

Q = "work"


def _send(meta: Metastore, body: dict[str, Any] | None = None, queue: str = Q, **kw: Any) -> int:
    with meta.db.tx() as conn:
        return meta.queue.send(conn, queue, body or {"n": 1}, **kw)


def _receive(meta: Metastore, vt: float = 60, max_receives: int = 5) -> Message | None:
    return meta.queue.receive(Q, vt, max_receives)[0]


def _ack(meta: Metastore, m: Message) -> None:
    assert m.receipt is not None
    with meta.db.tx() as conn:
        meta.queue.delete(conn, m.id, m.receipt)


def _wait(predicate: Callable[[], Any], timeout: float = 10) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)
    return value


def test_send_receive_ack(meta: Metastore) -> None:
    mid = _send(meta, {"k": "v", "nested": {"a": [1, 2]}}, object_id="o1")
    assert meta.queue.depth(Q) == {READY: 1, INFLIGHT: 0, DEAD: 0}
    m = _receive(meta)
    assert m is not None
    assert (m.id, m.object_id, m.body, m.state, m.receive_count) == (
        mid,
        "o1",
        {"k": "v", "nested": {"a": [1, 2]}},
        INFLIGHT,
        1,
    )
    assert m.receipt and m.visible_at > time.time() + 50
    assert _receive(meta) is None  # hidden while in flight
    assert meta.queue.get(mid).state == INFLIGHT
    assert meta.queue.for_object("o1") is not None
    _ack(meta, m)
    assert meta.queue.depth(Q) == {READY: 0, INFLIGHT: 0, DEAD: 0}
    assert meta.queue.for_object("o1") is None
    with pytest.raises(StateError, match="no longer exists"), meta.db.tx() as conn:
        meta.queue.delete(conn, m.id, m.receipt or "")


def test_queues_are_separate(meta: Metastore) -> None:
    _send(meta, queue="a")
    _send(meta, queue="b")
    assert meta.queue.receive("c", 60, 5) == (None, [])
    ma = meta.queue.receive("a", 60, 5)[0]
    assert ma is not None and ma.queue == "a"
    assert meta.queue.depth("b") == {READY: 1, INFLIGHT: 0, DEAD: 0}
    assert [m.queue for m in meta.queue.list("b")] == ["b"]


def test_expired_visibility_redelivers_and_makes_the_old_receipt_stale(meta: Metastore) -> None:
    _send(meta)
    first = _receive(meta, vt=0.3)
    assert first is not None and first.receipt is not None
    second = _wait(lambda: _receive(meta))
    assert (second.id, second.receive_count) == (first.id, 2)
    assert second.receipt != first.receipt
    stale_ops = [
        lambda conn: meta.queue.delete(conn, first.id, first.receipt),
        lambda conn: meta.queue.change_visibility(conn, first.id, first.receipt, 10),
        lambda conn: meta.queue.change_visibility(conn, first.id, first.receipt, 0, error="x"),
        lambda conn: meta.queue.dead_letter(conn, first.id, first.receipt, "x"),
        lambda conn: meta.queue.release(conn, first.id, first.receipt),
    ]
    for op in stale_ops:
        with pytest.raises(StateError, match="stale"), meta.db.tx() as conn:
            op(conn)
    m = meta.queue.get(first.id)
    assert (m.state, m.receipt, m.receive_count) == (INFLIGHT, second.receipt, 2)  # untouched
    _ack(meta, second)  # the current holder can


def test_a_stale_ack_is_rolled_back_with_its_transaction(meta: Metastore) -> None:
    """A holder whose lease expired must not commit anything it wrote in the same transaction."""
    oid = "obj-stale"
    with meta.db.tx() as conn:
        meta.objects.insert(
            conn, id=oid, dataset="d", landing_path="p", size=1, mtime_ns=1, sha256="s", state="received", principal="t"
        )
        meta.queue.send(conn, Q, {}, object_id=oid)
    first = _receive(meta, vt=0.2)
    assert first is not None and first.receipt is not None
    _wait(lambda: _receive(meta))
    with pytest.raises(StateError), meta.db.tx() as conn:
        meta.objects.set_state(conn, oid, "committed", "late holder")
        meta.queue.delete(conn, first.id, first.receipt)
    assert meta.objects.get(oid).state == "received"


def test_heartbeat_extends_the_lease(meta: Metastore) -> None:
    _send(meta)
    m = _receive(meta, vt=0.5)
    assert m is not None and m.receipt is not None
    for _ in range(3):
        time.sleep(0.3)
        with meta.db.tx() as conn:
            meta.queue.change_visibility(conn, m.id, m.receipt, 0.5)
        assert _receive(meta) is None
    _ack(meta, m)


def test_a_failed_attempt_is_retried_after_its_delay_with_the_error_kept(meta: Metastore) -> None:
    _send(meta)
    m = _receive(meta)
    assert m is not None and m.receipt is not None
    with meta.db.tx() as conn:
        meta.queue.change_visibility(conn, m.id, m.receipt, 0.3, error="boom: it broke")
    got = meta.queue.get(m.id)
    assert (got.state, got.last_error, got.receipt) == (READY, "boom: it broke", None)
    assert _receive(meta) is None  # not before its delay
    again = _wait(lambda: _receive(meta))
    assert (again.id, again.receive_count, again.last_error) == (m.id, 2, "boom: it broke")


def test_delayed_messages_and_oldest_visible_first(meta: Metastore) -> None:
    late = _send(meta, {"n": "late"}, delay=0.4)
    a = _send(meta, {"n": "a"})
    b = _send(meta, {"n": "b"})
    first, second = _receive(meta), _receive(meta)
    assert first is not None and second is not None
    assert (first.id, second.id) == (a, b)
    assert _receive(meta) is None
    assert _wait(lambda: _receive(meta)).id == late


def test_release_gives_a_message_back_without_counting_the_receive(meta: Metastore) -> None:
    _send(meta)
    m = _receive(meta)
    assert m is not None and m.receipt is not None
    with meta.db.tx() as conn:
        meta.queue.release(conn, m.id, m.receipt)
    again = _receive(meta)
    assert again is not None and (again.id, again.receive_count) == (m.id, 1)


def test_max_receives_without_ack_dead_letters_on_the_next_receive(meta: Metastore) -> None:
    mid = _send(meta, object_id="poison")
    for i in range(2):
        m = meta.queue.receive(Q, 0.05, 2)[0]
        assert m is not None and m.receive_count == i + 1
        time.sleep(0.1)
    msg, dead = meta.queue.receive(Q, 60, 2)
    assert msg is None
    assert [d.id for d in dead] == [mid]
    got = meta.queue.get(mid)
    assert got.state == DEAD and got.dead_at is not None and "without being acknowledged" in (got.last_error or "")
    assert meta.queue.depth(Q) == {READY: 0, INFLIGHT: 0, DEAD: 1}
    assert [m.id for m in meta.queue.list(Q, state=DEAD)] == [mid]


def test_dead_letter_redrive_and_purge(meta: Metastore) -> None:
    mid = _send(meta)
    m = _receive(meta)
    assert m is not None and m.receipt is not None
    with meta.db.tx() as conn:
        meta.queue.dead_letter(conn, m.id, m.receipt, "cannot parse")
    assert _receive(meta) is None
    dead = meta.queue.get(mid)
    assert (dead.state, dead.last_error) == (DEAD, "cannot parse")
    with meta.db.tx() as conn:
        meta.queue.redrive(conn, mid)
    back = _receive(meta)
    assert back is not None and (back.id, back.receive_count) == (mid, 1)  # a fresh start
    with pytest.raises(StateError, match="not in the dead-letter queue"), meta.db.tx() as conn:
        meta.queue.redrive(conn, mid)
    with pytest.raises(NotFoundError), meta.db.tx() as conn:
        meta.queue.redrive(conn, mid + 1000)
    assert back.receipt is not None
    with meta.db.tx() as conn:
        meta.queue.dead_letter(conn, back.id, back.receipt, "still broken")
    with meta.db.tx() as conn:
        meta.queue.purge_dead(conn, mid)
    with pytest.raises(NotFoundError):
        meta.queue.get(mid)
    other = _send(meta)
    with meta.db.tx() as conn:
        meta.queue.purge_dead(conn, other)  # only dead messages are purged
    assert meta.queue.get(other).state == READY


def test_fifo_group_one_at_a_time_in_order_other_messages_not_blocked(meta: Metastore) -> None:
    g1 = _send(meta, group="g")
    g2 = _send(meta, group="g")
    h1 = _send(meta, group="h")
    free = _send(meta)
    got = [_receive(meta) for _ in range(4)]
    ids = [m.id if m else None for m in got]
    assert ids == [g1, h1, free, None]  # g2 waits behind g1
    m1 = got[0]
    assert m1 is not None
    _ack(meta, m1)
    nxt = _receive(meta)
    assert nxt is not None and nxt.id == g2


def test_fifo_group_keeps_its_order_across_an_expired_lease_and_a_retry(meta: Metastore) -> None:
    g1 = _send(meta, group="g")
    g2 = _send(meta, group="g")
    first = _receive(meta, vt=0.2)
    assert first is not None and first.id == g1
    again = _wait(lambda: _receive(meta))  # the holder died: the same head comes back, not g2
    assert again.id == g1
    assert again.receipt is not None
    with meta.db.tx() as conn:
        meta.queue.change_visibility(conn, again.id, again.receipt, 0.2, error="retry")
    assert _receive(meta) is None  # g2 still waits while g1 is scheduled for a retry
    third = _wait(lambda: _receive(meta))
    assert third.id == g1
    assert third.receipt is not None
    with meta.db.tx() as conn:
        meta.queue.dead_letter(conn, third.id, third.receipt, "poison")  # a dead head unblocks the group
    last = _receive(meta)
    assert last is not None and last.id == g2


@pytest.mark.parametrize("grouped", [False, True], ids=["plain", "fifo-groups"])
def test_concurrent_receivers_on_separate_engines_never_share_a_message(
    open_metastore: Callable[[], Metastore], grouped: bool
) -> None:
    """Four receivers, each with its own engine (as separate worker processes have), race for 120
    messages: each message is delivered once; in a FIFO group never two at a time."""
    metas = [open_metastore() for _ in range(4)]
    n = 120
    groups = ["a", "b", "c"]
    with metas[0].db.tx() as conn:
        sent = [metas[0].queue.send(conn, Q, {"i": i}, group=groups[i % 3] if grouped else None) for i in range(n)]
    # (message, group, time just after it was received, time just before its ack began)
    got: list[tuple[int, str | None, float, float]] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def receiver(meta: Metastore) -> None:
        try:
            idle_since = time.monotonic()
            while time.monotonic() - idle_since < 1.0:
                m = meta.queue.receive(Q, 60, 5)[0]
                received = time.monotonic()
                if m is None:
                    time.sleep(0.01)
                    continue
                idle_since = received
                acking = time.monotonic()
                _ack(meta, m)
                with lock:
                    got.append((m.id, m.group_id, received, acking))
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=receiver, args=(m,)) for m in metas]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    assert sorted(i for i, *_ in got) == sorted(sent)
    if grouped:
        for g in groups:
            mine = sorted((r for r in got if r[1] == g), key=lambda r: r[2])
            assert [r[0] for r in mine] == sorted(r[0] for r in mine), f"group {g} out of order"
            for before, after in itertools.pairwise(mine):
                # the next one can only be received once the previous one's ack has begun
                assert after[2] > before[3], f"group {g}: {after[0]} delivered while {before[0]} was in flight"
    assert metas[0].queue.depth(Q) == {READY: 0, INFLIGHT: 0, DEAD: 0}
