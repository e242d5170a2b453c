"""Objects, catalog, audit log and schema migrations: the same contract on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import text

from tarn.errors import NotFoundError
from tarn.metastore import Metastore
from tarn.metastore.db import Database, alembic_head
from tarn.metastore.objects import (
    COMMITTED,
    DEAD_LETTERED,
    DUPLICATE,
    FAILED,
    PROCESSING,
    RECEIVED,
    REJECTED,
)

A = [{"name": "a", "type": "long", "nullable": True}]
AB = [*A, {"name": "b", "type": "string", "nullable": True}]
A_DOUBLE_B = [{"name": "a", "type": "double", "nullable": True}, AB[1]]


def _insert(meta: Metastore, oid: str, **values: Any) -> None:
    row: dict[str, Any] = {
        "id": oid,
        "dataset": "orders",
        "landing_path": f"orders/{oid}.csv",
        "size": 10,
        "mtime_ns": 1,
        "sha256": f"sha-{oid}",
        "state": RECEIVED,
        "principal": "tester",
        **values,
    }
    with meta.db.tx() as conn:
        meta.objects.insert(conn, **row)


# ----------------------------------------------------------------------------------------- objects
def test_an_object_keeps_every_field_and_its_trail(meta: Metastore) -> None:
    _insert(meta, "0123456789abcdef0001", size=2**40, mtime_ns=1_700_000_000_123_456_789, closed_at=12.5)
    meta.objects.transition("0123456789abcdef0001", PROCESSING, "attempt 1", attempts=1)
    with meta.db.tx() as conn:
        meta.objects.set_state(
            conn,
            "0123456789abcdef0001",
            COMMITTED,
            "10 rows committed, 0 quarantined",
            rows_total=10,
            rows_committed=10,
            rows_quarantined=0,
            table_version=2**33,
            format="csv",
        )
    o = meta.objects.get("0123456789abcdef0001")
    assert (o.size, o.mtime_ns, o.closed_at, o.state, o.attempts) == (
        2**40,
        1_700_000_000_123_456_789,
        12.5,
        COMMITTED,
        1,
    )
    assert (o.rows_total, o.rows_committed, o.rows_quarantined, o.table_version, o.format) == (10, 10, 0, 2**33, "csv")
    assert o.arrived_at <= o.updated_at
    trail = meta.objects.events(o.id)
    assert [(e["state"], e["message"]) for e in trail] == [
        (RECEIVED, None),
        (PROCESSING, "attempt 1"),
        (COMMITTED, "10 rows committed, 0 quarantined"),
    ]
    assert trail == sorted(trail, key=lambda e: e["at"])


def test_get_by_unambiguous_prefix_and_helpful_not_found(meta: Metastore) -> None:
    _insert(meta, "aaaaaa1111")
    _insert(meta, "aaaaaa2222")
    _insert(meta, "bbbbbb3333")
    assert meta.objects.get("bbbbbb33").id == "bbbbbb3333"
    with pytest.raises(NotFoundError, match="no object 'aaaaaa'"):
        meta.objects.get("aaaaaa")  # ambiguous
    with pytest.raises(NotFoundError, match="did you mean 'bbbbbb3333'"):
        meta.objects.get("bbbbbb3334")


def test_same_content_is_found_only_among_live_objects(meta: Metastore) -> None:
    _insert(meta, "first", sha256="same")
    for oid, state in (("dup", DUPLICATE), ("rej", REJECTED), ("dead", DEAD_LETTERED)):
        _insert(meta, oid, sha256="same2", state=state)
    with meta.db.read() as conn:
        found = meta.objects.find_by_content(conn, "orders", "same")
        assert found is not None and found.id == "first"
        assert meta.objects.find_by_content(conn, "other", "same") is None
        assert meta.objects.find_by_content(conn, "orders", "same2") is None


def test_landing_keys_identify_a_version_of_a_file(meta: Metastore) -> None:
    _insert(meta, "v1", landing_path="orders/a b/ü'x\n.csv", size=5, mtime_ns=7)
    with meta.db.read() as conn:
        assert meta.objects.seen_landing(conn, "orders/a b/ü'x\n.csv", 5, 7)
        assert not meta.objects.seen_landing(conn, "orders/a b/ü'x\n.csv", 6, 7)
        assert not meta.objects.seen_landing(conn, "orders/a b/ü'x\n.csv", 5, 8)
    assert meta.objects.seen_landing_keys() == {("orders/a b/ü'x\n.csv", 5, 7)}


def test_listing_filters_orders_newest_first_and_counts_by_state(meta: Metastore) -> None:
    for i, state in enumerate([RECEIVED, COMMITTED, COMMITTED, FAILED]):
        _insert(meta, f"o{i}", state=state, dataset="orders" if i % 2 else "clicks", arrived_at=100.0 + i)
    assert [o.id for o in meta.objects.list()] == ["o3", "o2", "o1", "o0"]
    assert [o.id for o in meta.objects.list(state=COMMITTED)] == ["o2", "o1"]
    assert [o.id for o in meta.objects.list(dataset="clicks")] == ["o2", "o0"]
    assert [o.id for o in meta.objects.list(limit=1)] == ["o3"]
    assert meta.objects.counts_by_state() == {RECEIVED: 1, COMMITTED: 2, FAILED: 1}


def test_a_failed_transaction_leaves_no_trace(meta: Metastore) -> None:
    with pytest.raises(RuntimeError), meta.db.tx() as conn:
        meta.objects.insert(
            conn,
            id="ghost",
            dataset="d",
            landing_path="p",
            size=1,
            mtime_ns=1,
            sha256="s",
            state=RECEIVED,
            principal="t",
        )
        meta.queue.send(conn, "ingest", {"object_id": "ghost"}, object_id="ghost")
        raise RuntimeError("crash between the two writes")
    assert meta.objects.list() == []
    assert meta.objects.events("ghost") == []
    assert meta.queue.depth("ingest")["ready"] == 0


# ----------------------------------------------------------------------------------------- catalog
def test_catalog_records_a_table_and_a_schema_version_only_on_change(meta: Metastore) -> None:
    cat = meta.catalog
    assert (
        cat.record("stage.t", zone="stage", location="/l/t", columns=A, delta_version=0, dataset="t", object_id="o1")
        == 1
    )
    assert cat.record("stage.t", zone="stage", location="/l/t", columns=A, delta_version=1, object_id="o2") == 1
    assert cat.record("stage.t", zone="stage", location="/l/t", columns=AB, delta_version=2, object_id="o3") == 2
    assert cat.record("stage.t", zone="stage", location="/l/t", columns=A_DOUBLE_B, delta_version=2**40) == 3
    t = cat.get("stage.t")
    assert (t["zone"], t["location"], t["dataset"], t["schema_version"], t["delta_version"]) == (
        "stage",
        "/l/t",
        "t",
        3,
        2**40,
    )
    versions = cat.versions("stage.t")
    assert [(v["version"], v["change"], v["object_id"]) for v in versions] == [
        (1, "created", "o1"),
        (2, "+b string", "o3"),
        (3, "~a long→double", None),
    ]
    assert versions[0]["columns"] == A  # JSON round trip
    assert cat.current_columns("stage.t") == A_DOUBLE_B
    assert cat.current_columns("stage.nope") is None
    cat.record("quarantine.t", zone="quarantine", location="/l/q", columns=A, delta_version=None)
    assert [r["name"] for r in cat.tables()] == ["quarantine.t", "stage.t"]
    with pytest.raises(NotFoundError, match=r"did you mean 'stage\.t'"):
        cat.get("stage.tt")


def test_concurrent_records_of_one_table_neither_fail_nor_skip_versions(
    open_metastore: Callable[[], Metastore],
) -> None:
    """Workers committing the first files of a dataset at once (and, later, files that change its
    columns at once): one table, every schema version once, no error. (On PostgreSQL a read-then-
    insert without a lock raced into IntegrityError; CatalogRepo.record now serialises per table.)"""
    metas = [open_metastore() for _ in range(4)]
    errors: list[BaseException] = []

    def record(m: Metastore, name: str, cols: list[dict[str, Any]]) -> None:
        try:
            m.catalog.record(name, zone="stage", location=f"/l/{name}", columns=cols, delta_version=1)
        except BaseException as e:
            errors.append(e)

    for race in range(8):
        name = f"stage.c{race}"
        threads = [threading.Thread(target=record, args=(m, name, A if i % 2 else AB)) for i, m in enumerate(metas)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        versions = metas[0].catalog.versions(name)
        assert [v["version"] for v in versions] == list(range(1, len(versions) + 1))
        assert metas[0].catalog.get(name)["schema_version"] == len(versions)
    assert errors == []


# ------------------------------------------------------------------------------------------- audit
def test_audit_log_is_append_only_and_newest_first(meta: Metastore) -> None:
    meta.audit.append("alice", "ingest", "orders:/tmp/ü.csv", {"object_id": "o1", "n": [1, 2]})
    meta.audit.append("bob", "query", None, None)
    meta.audit.append("alice", "dlq.redrive", "7")
    rows = meta.audit.list()
    assert [(r["principal"], r["action"], r["target"]) for r in rows] == [
        ("alice", "dlq.redrive", "7"),
        ("bob", "query", None),
        ("alice", "ingest", "orders:/tmp/ü.csv"),
    ]
    assert rows[2]["detail"] == {"object_id": "o1", "n": [1, 2]}
    assert meta.audit.count() == 3
    assert [r["action"] for r in meta.audit.list(limit=1)] == ["dlq.redrive"]


# -------------------------------------------------------------------------------------- migrations
def test_a_new_database_is_migrated_to_head_once_even_by_racing_openers(metastore_url: str) -> None:
    """Several processes' worth of engines open a fresh metastore at once: one migration, no error."""
    errors: list[BaseException] = []
    opened: list[Database] = []
    lock = threading.Lock()

    def open_db() -> None:
        try:
            db = Database(metastore_url)
            with lock:
                opened.append(db)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=open_db) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    try:
        assert errors == []
        with opened[0].read() as conn:
            revs = [r[0] for r in conn.execute(text("SELECT version_num FROM alembic_version"))]
        assert revs == [alembic_head()]
        Database(metastore_url).dispose()  # and opening a migrated database again is a no-op
    finally:
        for db in opened:
            db.dispose()
