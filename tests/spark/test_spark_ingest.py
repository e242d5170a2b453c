"""Ingest on Spark (``ingest_engine: spark``): the same stage rows (with ``_tarn_row``), quarantine rows, object
states and counts as the DuckDB path for the same file; exactly once; what Spark cannot reproduce goes to DuckDB."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from spark_equivalence import MASTER, SPARK_CONF

from tarn.ingest import spark_ingest
from tarn.ingest.processor import token_for
from tarn.lake import Lake
from tarn.metastore.objects import COMMITTED_WITH_QUARANTINE
from tarn.tables import delta

pytestmark = pytest.mark.spark

ENGINE = {"name": "spark", "master": MASTER, "conf": SPARK_CONF}

COLUMNS = [
    {"name": "id", "type": "long", "nullable": False},
    {"name": "amount", "type": "double"},
    {"name": "day", "type": "date"},
    {"name": "qty", "type": "integer"},
    {"name": "active", "type": "boolean"},
    {"name": "note", "type": "string"},
    {"name": "at", "type": "timestamp"},
]

CSV = (
    "id,amount,day,qty,active,note,at\n"  # line 1: header
    '1,2.5,2024-01-01,3,true,"a, b",2024-01-01 10:00:00\n'  # good, a quoted delimiter
    "2,abc,2024-01-02,4,false,x,2024-01-02T01:02:03Z\n"  # amount is not a double
    ",3.0,2024-01-03,5,yes,,\n"  # id is non-nullable
    "\n"  # a blank line: not counted (DuckDB's numbering)
    '4,1.0,2024-01-04,5000,no,"say ""hi""",2024-01-04\n'  # constraint qty_small; doubled quotes
    "5,1.0,2024-13-01,1,true,NA,\n"  # no 13th month; NA is NULL
    "7,1.5,2024-01-07,2.5,true,y,2024-01-07 25:00:00\n"  # 2.5 is not an integer, no hour 25
    "8,1.0,2024-01-08,1,maybe,z,\n"  # not a boolean
    "9,0.5,2024-01-09,7,n,,2024-01-09 00:00:00+02:00\n"  # good
    '11,-4,2024-01-11,8,Y,"",2024-01-11\n'  # good, a quoted empty string is NULL
)


def _dataset(engine: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": "orders",
        "format": "csv",
        "columns": COLUMNS,
        "csv": {"null_values": ["", "NA"]},
        "constraints": [{"name": "qty_small", "check": "qty < 1000"}],
        "ingest_engine": engine,
        "spark_min_bytes": 1,
        **extra,
    }


def _stage(lake: Lake) -> list[dict[str, Any]]:
    out = lake.query("SELECT * EXCLUDE (_tarn_object_id) FROM stage.orders ORDER BY _tarn_row").table.to_pylist()
    return list(out)


def _quarantine(lake: Lake) -> list[dict[str, Any]]:
    rows = lake.query(
        "SELECT _tarn_row, source_file, reason, errors, record FROM quarantine.orders ORDER BY _tarn_row"
    ).table.to_pylist()
    for r in rows:
        with contextlib.suppress(ValueError):  # a malformed record keeps its text
            r["record"] = json.loads(r["record"])
    return list(rows)


def _counts(obj: Any) -> tuple[Any, ...]:
    return (obj.state, obj.rows_total, obj.rows_committed, obj.rows_quarantined, obj.format, obj.table_version)


def _writer(lake: Lake, object_id: str) -> str | None:
    info = delta.commit_info(lake.storage.table_uri("stage", "orders"), token_for(object_id)) or {}
    return info.get("tarn.writer")


def _both(
    new_lake: Callable[..., Lake], ingest_file: Callable[..., Any], content: str, name: str = "orders.csv", **ds: Any
) -> tuple[Lake, Any, Lake, Any]:
    duck = new_lake([_dataset("duckdb", **ds)], engine=ENGINE)
    spark = new_lake([_dataset("spark", **ds)], engine=ENGINE)
    return duck, ingest_file(duck, "orders", name, content), spark, ingest_file(spark, "orders", name, content)


def test_spark_ingest_gives_the_duckdb_results(
    spark: Any, new_lake: Callable[..., Lake], ingest_file: Callable[..., Any]
) -> None:
    duck, d_obj, lake, s_obj = _both(new_lake, ingest_file, CSV)

    assert _writer(lake, s_obj.id) == "spark"  # Spark wrote and Tarn committed the stage files
    assert _writer(duck, d_obj.id) is None
    assert s_obj.state == COMMITTED_WITH_QUARANTINE
    assert _counts(s_obj) == _counts(d_obj)
    assert (s_obj.rows_total, s_obj.rows_committed, s_obj.rows_quarantined) == (9, 3, 6)
    assert _stage(lake) == _stage(duck)
    assert [r["_tarn_row"] for r in _stage(lake)] == [2, 9, 10]
    ids = lake.query("SELECT DISTINCT _tarn_object_id AS o FROM stage.orders").table.column("o").to_pylist()
    assert ids == [s_obj.id]
    assert _quarantine(lake) == _quarantine(duck)
    assert [r["_tarn_row"] for r in _quarantine(lake)] == [3, 4, 5, 6, 7, 8]


def test_a_redelivery_does_not_duplicate(
    spark: Any, new_lake: Callable[..., Lake], ingest_file: Callable[..., Any]
) -> None:
    lake = new_lake([_dataset("spark")], engine=ENGINE)
    obj = ingest_file(lake, "orders", "orders.csv", CSV)
    before = (_stage(lake), _quarantine(lake))
    svc = lake.ingest_service
    ds = svc.dataset("orders")
    raw = lake.storage.local_path(str(obj.raw_path))
    stage_uri = lake.storage.table_uri("stage", "orders")
    with raw as path:
        # A redelivery: both commits are found by their token, nothing is read or written.
        again = spark_ingest.run(svc._processor(ds), svc.spec.engine, obj.id, path, "orders.csv")
        assert again.already_committed
        assert (again.rows_committed, again.rows_quarantined) == (3, 6)
        # Even an attempt that does not look first (first_attempt): the commit with the token adds nothing
        # and the files Spark wrote are deleted.
        spark_ingest.run(svc._processor(ds), svc.spec.engine, obj.id, path, "orders.csv", first_attempt=True)
    assert (_stage(lake), _quarantine(lake)) == before
    table = delta.latest(stage_uri)
    assert table is not None
    referenced = {Path(u).name for u in table.file_uris()}
    on_disk = {p.name for p in Path(stage_uri.removeprefix("file://")).rglob("*.parquet")}
    assert on_disk == referenced


@pytest.mark.parametrize(
    ("case", "content", "name", "ds"),
    [
        ("ragged rows", CSV + "12,1,2024-01-12\n13,1,2024-01-13,1,true,a,,extra\n", "orders.csv", {}),
        (
            "a quoted line break",
            CSV + '14,1,2024-01-14,1,true,"two\nlines",\n15,1,2024-01-15,1,t,,\n',
            "orders.csv",
            {},
        ),
        ("JSON Lines", '{"id": 1, "qty": 2}\n{"id": "x"}\n', "orders.jsonl", {"format": "auto"}),
        ("a primary key", CSV, "orders.csv", {"primary_key": ["id"]}),
    ],
)
def test_what_spark_cannot_reproduce_goes_to_duckdb(
    spark: Any,
    new_lake: Callable[..., Lake],
    ingest_file: Callable[..., Any],
    case: str,
    content: str,
    name: str,
    ds: dict[str, Any],
) -> None:
    duck, d_obj, lake, s_obj = _both(new_lake, ingest_file, content, name, **ds)

    assert _writer(lake, s_obj.id) is None, case  # committed by the DuckDB path
    assert _counts(s_obj) == _counts(d_obj)
    assert _stage(lake) == _stage(duck)
    assert _quarantine(lake) == _quarantine(duck)


def test_small_objects_stay_on_duckdb(
    spark: Any, new_lake: Callable[..., Lake], ingest_file: Callable[..., Any]
) -> None:
    lake = new_lake([_dataset("spark", spark_min_bytes=1 << 30)], engine=ENGINE)
    obj = ingest_file(lake, "orders", "orders.csv", CSV)
    assert _writer(lake, obj.id) is None
    assert (obj.rows_committed, obj.rows_quarantined) == (3, 6)


def test_line_numbers_across_partitions(
    spark: Any, new_lake: Callable[..., Lake], ingest_file: Callable[..., Any]
) -> None:
    """A file Spark splits into several partitions (local[2]: about half the file each): every row keeps
    DuckDB's line number."""
    lines = ["id,amount,day,qty,active,note,at"]
    for i in range(300_000):
        if i % 5003 == 0:
            lines.append("")
        amount = "x" if i % 997 == 0 else f"{i}.5"
        lines.append(f'{i},{amount},2024-01-{1 + i % 28:02d},{i % 500},true,"n {i}",')
    content = "\n".join(lines) + "\n"
    assert len(content) > 12 * 1024**2
    duck, d_obj, lake, s_obj = _both(new_lake, ingest_file, content)

    assert _writer(lake, s_obj.id) == "spark"
    assert _counts(s_obj) == _counts(d_obj)
    sql = "SELECT * EXCLUDE (_tarn_object_id) FROM stage.orders ORDER BY _tarn_row"
    assert lake.query(sql).table.equals(duck.query(sql).table)
    assert _quarantine(lake) == _quarantine(duck)
