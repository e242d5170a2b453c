"""The three schema-evolution policies (evolve, freeze, rescue) and schema versions in the catalog."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tarn.lake import Lake
from tarn.metastore.objects import COMMITTED, REJECTED

FIRST = "a,b\n1,x\n2,y\n"
WIDER = "a,b,c,d\n3,z,5,w\n4,q,,\n"  # two new columns; the second row leaves them empty
NARROWER = "a\n7\n"  # column b missing


def _user_columns(lake: Lake, table: str) -> list[tuple[str, str]]:
    return [(c["name"], c["type"]) for c in lake.table(table)["columns"] if not c["name"].startswith("_tarn_")]


def test_evolve_adds_new_columns_and_records_a_schema_version(
    new_lake: Callable[..., Lake], ingest_file: Callable[..., Any], rows: Callable[..., list[dict[str, Any]]]
) -> None:
    lake = new_lake([{"name": "ev", "evolution": "evolve"}])
    first = ingest_file(lake, "ev", "1.csv", FIRST)
    assert [v["version"] for v in lake.table("stage.ev")["schema_versions"]] == [1]

    wider = ingest_file(lake, "ev", "2.csv", WIDER)
    assert wider.state == COMMITTED, wider.error
    info = lake.table("stage.ev")
    assert info["schema_version"] == 2
    versions = info["schema_versions"]
    assert [(v["version"], v["object_id"]) for v in versions] == [(1, first.id), (2, wider.id)]
    assert versions[0]["change"] == "created"
    assert versions[1]["change"] == "+c long, +d string"
    assert versions[1]["delta_version"] == wider.table_version
    assert _user_columns(lake, "stage.ev") == [("a", "long"), ("b", "string"), ("c", "long"), ("d", "string")]
    assert any("new columns: c, d" in (e["message"] or "") for e in lake.object_detail(wider.id)["events"])

    # A file lacking a column: committed with NULLs, no new schema version.
    narrower = ingest_file(lake, "ev", "3.csv", NARROWER)
    assert narrower.state == COMMITTED, narrower.error
    assert lake.table("stage.ev")["schema_version"] == 2
    assert rows(lake, "SELECT a, b, c, d FROM stage.ev ORDER BY a") == [
        {"a": 1, "b": "x", "c": None, "d": None},
        {"a": 2, "b": "y", "c": None, "d": None},
        {"a": 3, "b": "z", "c": 5, "d": "w"},
        {"a": 4, "b": "q", "c": None, "d": None},
        {"a": 7, "b": None, "c": None, "d": None},
    ]


def test_freeze_rejects_new_and_missing_columns_naming_them(
    new_lake: Callable[..., Lake], ingest_file: Callable[..., Any], rows: Callable[..., list[dict[str, Any]]]
) -> None:
    lake = new_lake([{"name": "fr", "evolution": "freeze"}])
    assert ingest_file(lake, "fr", "1.csv", FIRST).state == COMMITTED
    delta_version = lake.table("stage.fr")["delta_version"]

    wider = ingest_file(lake, "fr", "2.csv", WIDER)
    assert wider.state == REJECTED
    assert wider.error is not None
    assert "frozen schema" in wider.error
    assert "new column(s) c, d" in wider.error
    assert wider.rows_committed is None

    narrower = ingest_file(lake, "fr", "3.csv", NARROWER)
    assert narrower.state == REJECTED
    assert narrower.error is not None and "missing column(s) b" in narrower.error

    # Nothing of the rejected files reached the table, and the schema did not change.
    assert rows(lake, "SELECT a FROM stage.fr ORDER BY a") == [{"a": 1}, {"a": 2}]
    info = lake.table("stage.fr")
    assert info["delta_version"] == delta_version
    assert [v["version"] for v in info["schema_versions"]] == [1]
    assert _user_columns(lake, "stage.fr") == [("a", "long"), ("b", "string")]
    # A rejection is terminal: not retried, not dead-lettered.
    assert lake.status().queue == {"ready": 0, "inflight": 0, "dead": 0}


def test_freeze_with_a_declared_schema_rejects_the_first_file_too(
    new_lake: Callable[..., Lake], ingest_file: Callable[..., Any]
) -> None:
    lake = new_lake([{"name": "fd", "evolution": "freeze", "columns": [{"name": "a", "type": "long"}, {"name": "b"}]}])
    obj = ingest_file(lake, "fd", "1.csv", "a,b,extra\n1,x,y\n")
    assert obj.state == REJECTED
    assert obj.error is not None and "new column(s) extra" in obj.error
    assert lake.tables() == []


def test_rescue_keeps_unknown_fields_in_a_json_column(
    new_lake: Callable[..., Lake], ingest_file: Callable[..., Any], rows: Callable[..., list[dict[str, Any]]]
) -> None:
    lake = new_lake([{"name": "rs", "evolution": "rescue"}])
    assert ingest_file(lake, "rs", "1.csv", FIRST).state == COMMITTED
    wider = ingest_file(lake, "rs", "2.csv", WIDER)
    assert wider.state == COMMITTED, wider.error
    narrower = ingest_file(lake, "rs", "3.csv", NARROWER)
    assert narrower.state == COMMITTED, narrower.error

    assert _user_columns(lake, "stage.rs") == [("a", "long"), ("b", "string"), ("_rescued", "string")]
    assert lake.table("stage.rs")["schema_version"] == 1
    got = rows(lake, "SELECT a, b, _rescued FROM stage.rs ORDER BY a")
    assert [(r["a"], r["b"]) for r in got] == [(1, "x"), (2, "y"), (3, "z"), (4, "q"), (7, None)]
    rescued = {r["a"]: r["_rescued"] for r in got}
    assert json.loads(rescued[3]) == {"c": "5", "d": "w"}
    assert rescued[1] is None and rescued[2] is None and rescued[7] is None
    assert rescued[4] is None  # its unknown fields were empty


def test_rescue_with_json_lines(
    new_lake: Callable[..., Lake], ingest_file: Callable[..., Any], rows: Callable[..., list[dict[str, Any]]]
) -> None:
    lake = new_lake(
        [
            {
                "name": "rj",
                "format": "jsonl",
                "evolution": "rescue",
                "columns": [{"name": "id", "type": "long"}, {"name": "name"}],
            }
        ]
    )
    obj = ingest_file(lake, "rj", "r.jsonl", '{"id": 1, "name": "a", "colour": "red"}\n{"id": 2, "name": "b"}\n')
    assert obj.state == COMMITTED, obj.error
    got = rows(lake, "SELECT id, name, _rescued FROM stage.rj ORDER BY id")
    assert json.loads(got[0]["_rescued"]) == {"colour": "red"}
    assert got[1]["_rescued"] is None
    assert "colour" not in {c["name"] for c in lake.table("stage.rj")["columns"]}


def test_arc_schema_file_declares_the_columns(
    make_project: Callable[..., Path],
    open_lake: Callable[[Path], Lake],
    ingest_file: Callable[..., Any],
    rows: Callable[..., list[dict[str, Any]]],
) -> None:
    project = make_project([{"name": "arc", "format": "csv", "schema_file": "schemas/arc.json"}])
    (project / "schemas").mkdir()
    (project / "schemas" / "arc.json").write_text(
        json.dumps(
            [
                {"name": "id", "type": "integer", "nullable": False, "trim": True, "nullableValues": ["", "null"]},
                {"name": "price", "type": "decimal", "precision": 10, "scale": 2, "nullable": True},
                {"name": "code", "type": "string", "nullable": True, "nullableValues": ["N/A"]},
            ]
        )
    )
    lake = open_lake(project)
    obj = ingest_file(lake, "arc", "a.csv", "id,price,code\n 1 ,9.99,A\n2,1.5,N/A\nnull,3,C\n")
    assert (obj.rows_committed, obj.rows_quarantined) == (2, 1)
    assert _user_columns(lake, "stage.arc") == [("id", "integer"), ("price", "decimal(10,2)"), ("code", "string")]
    got = rows(lake, "SELECT id, CAST(price AS VARCHAR) AS price, code FROM stage.arc ORDER BY id")
    assert got == [{"id": 1, "price": "9.99", "code": "A"}, {"id": 2, "price": "1.50", "code": None}]
    [bad] = rows(lake, "SELECT _tarn_row, errors FROM quarantine.arc")
    assert bad == {"_tarn_row": 4, "errors": [{"field": "id", "message": "non-nullable column is empty"}]}
