"""Per-row quarantine: rows that fail typing, nullability, a constraint, or do not parse go to the
quarantine table with the file, the line number, the field and the reason; good rows are
committed to the stage table."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import Any

import pytest

from tarn.lake import Lake
from tarn.metastore.objects import COMMITTED, COMMITTED_WITH_QUARANTINE

ORDERS = {
    "name": "orders",
    "format": "csv",
    "columns": [
        {"name": "id", "type": "long", "nullable": False},
        {"name": "amount", "type": "double"},
        {"name": "day", "type": "date"},
        {"name": "qty", "type": "integer"},
        {"name": "active", "type": "boolean"},
    ],
    "constraints": [{"name": "qty_small", "check": "qty < 1000"}],
}

ORDERS_CSV = (
    "id,amount,day,qty,active\n"  # line 1: header
    "1,2.5,2024-01-01,3,true\n"  # 2: good
    "2,abc,2024-01-02,4,false\n"  # 3: amount is not a double
    ",3.0,2024-01-03,5,yes\n"  # 4: id is non-nullable
    "4,1.0,2024-01-04,5000,no\n"  # 5: constraint qty_small
    "5,1.0,2024-13-01,1,true\n"  # 6: no 13th month
    "6,1.0,2024-01-06,1,true,extra\n"  # 7: ragged: one field too many
    "7,1.5,2024-01-07,2.5,true\n"  # 8: 2.5 is not an integer (not rounded)
    "8,1.0,2024-01-08,1,maybe\n"  # 9: not a boolean
    "9,0.5,2024-01-09,7,n\n"  # 10: good
    "10,1,2024-01-10\n"  # 11: ragged: two fields missing
    "11,-4,2024-01-11,8,Y\n"  # 12: good
)


def _by_line(rows: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    return {r["_tarn_row"]: r for r in rows}


@pytest.fixture
def orders_lake(new_lake: Callable[..., Lake]) -> Lake:
    return new_lake([ORDERS])


def test_csv_good_rows_are_committed_typed_with_their_line_numbers(
    orders_lake: Lake, ingest_file: Callable[..., Any], rows: Callable[..., list[dict[str, Any]]]
) -> None:
    obj = ingest_file(orders_lake, "orders", "orders.csv", ORDERS_CSV)

    assert obj.state == COMMITTED_WITH_QUARANTINE
    assert (obj.rows_total, obj.rows_committed, obj.rows_quarantined) == (11, 3, 8)
    assert obj.format == "csv"
    good = rows(orders_lake, "SELECT * FROM stage.orders ORDER BY id")
    assert [(r["id"], r["_tarn_row"]) for r in good] == [(1, 2), (9, 10), (11, 12)]
    assert good[0]["amount"] == 2.5
    assert good[0]["day"] == dt.date(2024, 1, 1)
    assert good[0]["qty"] == 3
    assert [r["active"] for r in good] == [True, False, True]
    assert all(r["_tarn_object_id"] == obj.id for r in good)
    types = rows(
        orders_lake,
        "SELECT typeof(id) AS id, typeof(amount) AS amount, typeof(day) AS day, typeof(qty) AS qty, "
        "typeof(active) AS active FROM stage.orders LIMIT 1",
    )[0]
    assert types == {"id": "BIGINT", "amount": "DOUBLE", "day": "DATE", "qty": "INTEGER", "active": "BOOLEAN"}


def test_csv_bad_rows_are_quarantined_with_line_field_and_reason(
    orders_lake: Lake, ingest_file: Callable[..., Any], rows: Callable[..., list[dict[str, Any]]]
) -> None:
    obj = ingest_file(orders_lake, "orders", "orders.csv", ORDERS_CSV)

    bad = _by_line(rows(orders_lake, "SELECT * FROM quarantine.orders"))
    assert sorted(bad) == [3, 4, 5, 6, 7, 8, 9, 11]
    assert all(r["_tarn_object_id"] == obj.id and r["source_file"] == "orders.csv" for r in bad.values())

    assert bad[3]["errors"] == [{"field": "amount", "message": "cannot convert 'abc' to double"}]
    assert bad[3]["reason"] == "amount: cannot convert 'abc' to double"
    assert json.loads(bad[3]["record"]) == {
        "id": "2",
        "amount": "abc",
        "day": "2024-01-02",
        "qty": "4",
        "active": "false",
    }
    assert bad[4]["errors"] == [{"field": "id", "message": "non-nullable column is empty"}]
    assert bad[5]["errors"] == [{"field": None, "message": "constraint 'qty_small' failed"}]
    assert bad[6]["errors"] == [{"field": "day", "message": "cannot convert '2024-13-01' to date"}]
    assert {"field": "qty", "message": "cannot convert '2.5' to integer"} in bad[8]["errors"]
    assert bad[9]["errors"] == [{"field": "active", "message": "cannot convert 'maybe' to boolean"}]
    for line, text in ((7, "6,1.0,2024-01-06,1,true,extra"), (11, "10,1,2024-01-10")):
        assert bad[line]["reason"].startswith("malformed record:"), bad[line]
        assert [e["field"] for e in bad[line]["errors"]] == [None]
        assert bad[line]["record"] == text
    assert all(isinstance(r["quarantined_at"], dt.datetime) for r in bad.values())


def test_quarantine_table_is_catalogued_and_clean_files_do_not_create_it(
    new_lake: Callable[..., Lake], ingest_file: Callable[..., Any]
) -> None:
    lake = new_lake([ORDERS, {**ORDERS, "name": "clean"}])
    clean = ingest_file(lake, "clean", "c.csv", "id,amount,day,qty,active\n1,1,2024-01-01,1,true\n")
    assert clean.state == COMMITTED
    assert (clean.rows_committed, clean.rows_quarantined) == (1, 0)
    ingest_file(lake, "orders", "orders.csv", ORDERS_CSV)

    names = {t["name"]: t for t in lake.tables()}
    assert set(names) == {"stage.clean", "stage.orders", "quarantine.orders"}
    assert names["quarantine.orders"]["rows"] == 8
    assert names["quarantine.orders"]["zone"] == "quarantine"
    assert names["stage.orders"]["rows"] == 3


def test_non_nullable_column_missing_from_the_file_quarantines_every_row(
    orders_lake: Lake, ingest_file: Callable[..., Any], rows: Callable[..., list[dict[str, Any]]]
) -> None:
    obj = ingest_file(orders_lake, "orders", "no_id.csv", "amount,day,qty,active\n1.0,2024-01-01,1,true\n")
    assert obj.state == COMMITTED_WITH_QUARANTINE
    assert (obj.rows_committed, obj.rows_quarantined) == (0, 1)
    [bad] = rows(orders_lake, "SELECT * FROM quarantine.orders")
    assert bad["_tarn_row"] == 2
    assert bad["errors"] == [{"field": "id", "message": "non-nullable column is missing from the file"}]


EVENTS = {
    "name": "events",
    "format": "jsonl",
    "columns": [
        {"name": "id", "type": "long", "nullable": False},
        {"name": "name", "type": "string", "nullable": False},
        {"name": "score", "type": "double"},
        {"name": "ts", "type": "timestamp"},
    ],
}

EVENTS_JSONL = (
    '{"id": 1, "name": "a", "score": 1.5, "ts": "2024-01-01T10:00:00Z"}\n'  # 1: good
    '{"id": "x", "name": "b"}\n'  # 2: id is not a number
    "{not json\n"  # 3: invalid JSON
    "[1, 2]\n"  # 4: valid JSON but not an object
    '{"id": 3}\n'  # 5: name is non-nullable
    '{"id": 4, "name": "d", "score": "high"}\n'  # 6: score is not a double
    '{"id": 5, "name": "e", "score": 2, "ts": "not a time"}\n'  # 7: ts is not a timestamp
    '{"id": 6, "name": "f", "score": -1}\n'  # 8: good
)


def test_jsonl_rows_are_typed_and_bad_lines_quarantined_with_reasons(
    new_lake: Callable[..., Lake], ingest_file: Callable[..., Any], rows: Callable[..., list[dict[str, Any]]]
) -> None:
    lake = new_lake([EVENTS])
    obj = ingest_file(lake, "events", "events.jsonl", EVENTS_JSONL)

    assert obj.state == COMMITTED_WITH_QUARANTINE
    assert obj.format == "jsonl"
    assert (obj.rows_total, obj.rows_committed, obj.rows_quarantined) == (8, 2, 6)
    good = rows(lake, "SELECT id, name, score, ts, _tarn_row FROM stage.events ORDER BY id")
    assert [(r["id"], r["name"], r["score"], r["_tarn_row"]) for r in good] == [(1, "a", 1.5, 1), (6, "f", -1.0, 8)]
    assert good[0]["ts"] == dt.datetime(2024, 1, 1, 10, tzinfo=dt.UTC)
    assert good[1]["ts"] is None

    bad = _by_line(rows(lake, "SELECT * FROM quarantine.events"))
    assert sorted(bad) == [2, 3, 4, 5, 6, 7]
    assert bad[2]["errors"] == [{"field": "id", "message": "cannot convert 'x' to long"}]
    assert bad[3]["errors"] == [{"field": None, "message": "malformed record: invalid JSON"}]
    assert "{not json" in bad[3]["record"]
    assert bad[4]["errors"] == [{"field": None, "message": "malformed record: not a JSON object"}]
    assert bad[5]["errors"] == [{"field": "name", "message": "non-nullable column is empty"}]
    assert bad[6]["errors"] == [{"field": "score", "message": "cannot convert 'high' to double"}]
    assert bad[7]["errors"] == [{"field": "ts", "message": "cannot convert 'not a time' to timestamp"}]
    assert all(r["source_file"] == "events.jsonl" for r in bad.values())


def test_duplicate_primary_key_within_a_file_keeps_the_first_and_quarantines_the_rest(
    new_lake: Callable[..., Lake], ingest_file: Callable[..., Any], rows: Callable[..., list[dict[str, Any]]]
) -> None:
    lake = new_lake(
        [
            {
                "name": "users",
                "columns": [{"name": "id", "type": "long"}, {"name": "email", "type": "string"}],
                "primary_key": ["id"],
            }
        ]
    )
    obj = ingest_file(lake, "users", "u.csv", "id,email\n1,a@x\n2,b@x\n1,c@x\n,d@x\n")
    assert obj.state == COMMITTED_WITH_QUARANTINE
    assert rows(lake, "SELECT id, email FROM stage.users ORDER BY id") == [
        {"id": 1, "email": "a@x"},
        {"id": 2, "email": "b@x"},
    ]
    bad = _by_line(rows(lake, "SELECT * FROM quarantine.users"))
    assert sorted(bad) == [4, 5]
    assert bad[4]["errors"] == [{"field": "id", "message": "duplicate primary key within the file"}]
    assert bad[5]["errors"] == [{"field": "id", "message": "primary key column is empty"}]


def test_inferred_types_are_enforced_on_later_files(
    new_lake: Callable[..., Lake], ingest_file: Callable[..., Any], rows: Callable[..., list[dict[str, Any]]]
) -> None:
    lake = new_lake([{"name": "m"}])
    first = ingest_file(lake, "m", "m1.csv", "k,v\n1,10\n2,20\n")
    assert first.state == COMMITTED
    assert lake.table("stage.m")["columns"][:2] == [
        {"name": "k", "type": "long", "nullable": True},
        {"name": "v", "type": "long", "nullable": True},
    ]
    second = ingest_file(lake, "m", "m2.csv", "k,v\n3,thirty\n4,40\n")
    assert second.state == COMMITTED_WITH_QUARANTINE
    assert [r["k"] for r in rows(lake, "SELECT k FROM stage.m ORDER BY k")] == [1, 2, 4]
    [bad] = rows(lake, "SELECT * FROM quarantine.m")
    assert (bad["_tarn_row"], bad["errors"]) == (2, [{"field": "v", "message": "cannot convert 'thirty' to long"}])


def test_csv_with_bom_crlf_and_quoted_fields(
    new_lake: Callable[..., Lake], ingest_file: Callable[..., Any], rows: Callable[..., list[dict[str, Any]]]
) -> None:
    lake = new_lake([{"name": "n", "columns": [{"name": "id", "type": "long"}, {"name": "note"}]}])
    text = '\ufeffid,note\r\n1,"a, b"\r\n2,"he said ""hi"""\r\nx,bad\r\n'
    obj = ingest_file(lake, "n", "n.csv", text)
    assert (obj.rows_committed, obj.rows_quarantined) == (2, 1)
    assert rows(lake, "SELECT id, note, _tarn_row FROM stage.n ORDER BY id") == [
        {"id": 1, "note": "a, b", "_tarn_row": 2},
        {"id": 2, "note": 'he said "hi"', "_tarn_row": 3},
    ]
    assert rows(lake, "SELECT _tarn_row FROM quarantine.n") == [{"_tarn_row": 4}]


@pytest.mark.xfail(
    strict=True,
    reason="KNOWN LIMITATION (README): _tarn_row is the record ordinal"
    "  plus the header lines, not the line in the file: a blank "
    "line (skipped by the reader) or a quoted field spanning lines shifts every later row, so a quarantined "
    "row points at the wrong line (ingest/sources.py Source.line_numbers)",
)
@pytest.mark.parametrize(
    "text",
    [
        "id,note\n1,a\n\n2,b\nbad,c\n",  # blank line 3
        'id,note\n1,"two\nlines"\n2,b\nbad,c\n',  # record 1 spans lines 2-3
    ],
    ids=["blank-line", "multi-line-field"],
)
def test_quarantined_csv_row_points_at_its_line_in_the_file(
    new_lake: Callable[..., Lake],
    ingest_file: Callable[..., Any],
    rows: Callable[..., list[dict[str, Any]]],
    text: str,
) -> None:
    lake = new_lake([{"name": "n", "columns": [{"name": "id", "type": "long"}, {"name": "note"}]}])
    ingest_file(lake, "n", "n.csv", text)
    assert text.splitlines()[5 - 1].startswith("bad")
    assert rows(lake, "SELECT _tarn_row FROM quarantine.n") == [{"_tarn_row": 5}]
