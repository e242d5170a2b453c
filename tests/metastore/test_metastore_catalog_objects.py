"""The catalog records tables and a new schema version only when the columns change; objects
keep a trail of their state changes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tarn.errors import NotFoundError
from tarn.metastore import Metastore
from tarn.metastore.db import Database
from tarn.metastore.objects import COMMITTED, PROCESSING, RECEIVED

A = [{"name": "a", "type": "long", "nullable": True}]
AB = [*A, {"name": "b", "type": "string", "nullable": True}]
B_DOUBLE = [{"name": "a", "type": "double", "nullable": True}, {"name": "b", "type": "string", "nullable": True}]


@pytest.fixture
def meta(tmp_path: Path) -> Iterator[Metastore]:
    m = Metastore(Database.sqlite_url(tmp_path / "m.db"))
    yield m
    m.close()


def test_schema_versions_are_recorded_on_change_only(meta: Metastore) -> None:
    cat = meta.catalog
    assert cat.record("stage.t", zone="stage", location="/l/t", columns=A, delta_version=0, object_id="o1") == 1
    assert cat.record("stage.t", zone="stage", location="/l/t", columns=A, delta_version=1, object_id="o2") == 1
    assert cat.record("stage.t", zone="stage", location="/l/t", columns=AB, delta_version=2, object_id="o3") == 2
    assert cat.record("stage.t", zone="stage", location="/l/t", columns=B_DOUBLE, delta_version=3) == 3
    versions = cat.versions("stage.t")
    assert [(v["version"], v["change"], v["object_id"]) for v in versions] == [
        (1, "created", "o1"),
        (2, "+b string", "o3"),
        (3, "~a long→double", None),
    ]
    assert cat.current_columns("stage.t") == B_DOUBLE
    t = cat.get("stage.t")
    assert (t["schema_version"], t["delta_version"], t["zone"]) == (3, 3, "stage")
    assert [x["name"] for x in cat.tables()] == ["stage.t"]
    assert cat.current_columns("stage.nope") is None
    with pytest.raises(NotFoundError, match=r"did you mean 'stage.t'"):
        cat.get("stage.tt")


def test_object_state_trail(meta: Metastore) -> None:
    with meta.db.tx() as conn:
        meta.objects.insert(
            conn,
            id="obj1",
            dataset="t",
            landing_path="t/a.csv",
            size=3,
            mtime_ns=1,
            sha256="ab",
            state=RECEIVED,
            principal="tester",
        )
    meta.objects.transition("obj1", PROCESSING, "attempt 1", attempts=1)
    meta.objects.transition("obj1", COMMITTED, "3 rows", rows_committed=3)
    obj = meta.objects.get("obj1")
    assert (obj.state, obj.attempts, obj.rows_committed) == (COMMITTED, 1, 3)
    assert [(e["state"], e["message"]) for e in meta.objects.events("obj1")] == [
        (RECEIVED, None),
        (PROCESSING, "attempt 1"),
        (COMMITTED, "3 rows"),
    ]
    assert meta.objects.counts_by_state() == {COMMITTED: 1}
    assert meta.objects.seen_landing_keys() == {("t/a.csv", 3, 1)}
