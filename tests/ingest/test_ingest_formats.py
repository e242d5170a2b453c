"""Formats and compression: CSV, JSON Lines, JSON arrays and Parquet, plain, gzip or zstd,
detected from the declared format, the file name or the content."""

from __future__ import annotations

import datetime as dt
import gzip
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from tarn.ingest.formats import compression_of, detect_format, normalize_columns
from tarn.lake import Lake
from tarn.metastore.objects import COMMITTED, REJECTED

CSV = "id,name,ts\n" + "".join(f"{i},n{i},2024-01-01T00:00:{i % 60:02d}Z\n" for i in range(500))
JSONL = "".join(json.dumps({"id": i, "name": f"n{i}", "ok": i % 2 == 0}) + "\n" for i in range(300))


@pytest.fixture
def lake(new_lake: Callable[..., Lake]) -> Lake:
    return new_lake([{"name": "a"}, {"name": "j"}, {"name": "p"}])


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("plain.csv", CSV.encode()),
        ("data.csv.gz", gzip.compress(CSV.encode())),
        ("data.csv.zst", zstandard.ZstdCompressor().compress(CSV.encode())),
        ("gzip_without_extension.csv", gzip.compress(CSV.encode())),
    ],
)
def test_csv_plain_and_compressed(
    lake: Lake,
    ingest_file: Callable[..., Any],
    rows: Callable[..., list[dict[str, Any]]],
    name: str,
    content: bytes,
) -> None:
    obj = ingest_file(lake, "a", name, content)
    assert obj.state == COMMITTED, obj.error
    assert (obj.format, obj.rows_total, obj.rows_committed) == ("csv", 500, 500)
    [summary] = rows(lake, "SELECT count(*) AS n, sum(id) AS s, max(ts) AS last, typeof(max(ts)) AS t FROM stage.a")
    assert summary["n"] == 500
    assert summary["s"] == sum(range(500))
    assert summary["t"] == "TIMESTAMP WITH TIME ZONE"
    assert summary["last"] == dt.datetime(2024, 1, 1, 0, 0, 59, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("e.jsonl", JSONL.encode()),
        ("e.jsonl.gz", gzip.compress(JSONL.encode())),
        ("e.ndjson.zst", zstandard.ZstdCompressor().compress(JSONL.encode())),
        ("e.data", JSONL.encode()),  # unknown extension: detected from the content
    ],
)
def test_json_lines_plain_and_compressed(
    lake: Lake,
    ingest_file: Callable[..., Any],
    rows: Callable[..., list[dict[str, Any]]],
    name: str,
    content: bytes,
) -> None:
    obj = ingest_file(lake, "j", name, content)
    assert obj.state == COMMITTED, obj.error
    assert (obj.format, obj.rows_committed) == ("jsonl", 300)
    cols = {c["name"]: c["type"] for c in lake.table("stage.j")["columns"]}
    assert (cols["id"], cols["name"], cols["ok"]) == ("long", "string", "boolean")
    assert rows(lake, "SELECT count(*) FILTER (WHERE ok) AS n_ok, max(id) AS m FROM stage.j") == [
        {"n_ok": 150, "m": 299}
    ]


def test_parquet_keeps_its_types(
    lake: Lake, ingest_file: Callable[..., Any], rows: Callable[..., list[dict[str, Any]]], tmp_path: Path
) -> None:
    table = pa.table(
        {
            "id": pa.array(range(100), pa.int64()),
            "price": pa.array([i / 4 for i in range(100)], pa.float64()),
            "seen_at": pa.array([dt.datetime(2024, 5, 1, tzinfo=dt.UTC)] * 100, pa.timestamp("us", tz="UTC")),
            "Label Name": pa.array([f"l{i}" for i in range(100)]),
        }
    )
    path = tmp_path / "t.parquet"
    pq.write_table(table, path)
    obj = ingest_file(lake, "p", "t.parquet", path.read_bytes())
    assert obj.state == COMMITTED, obj.error
    assert (obj.format, obj.rows_committed) == ("parquet", 100)
    cols = {c["name"]: c["type"] for c in lake.table("stage.p")["columns"]}
    assert cols["id"] == "long"
    assert cols["price"] == "double"
    assert cols["seen_at"] == "timestamp"
    assert cols["label_name"] == "string"  # names normalised to lower_snake_case
    [r] = rows(lake, "SELECT sum(price) AS s, min(seen_at) AS first_seen, max(label_name) AS l FROM stage.p")
    assert r["s"] == sum(i / 4 for i in range(100))
    assert r["first_seen"] == dt.datetime(2024, 5, 1, tzinfo=dt.UTC)
    assert r["l"] == "l99"
    assert rows(lake, "SELECT _tarn_row FROM stage.p WHERE id = 41") == [{"_tarn_row": 42}]


def test_json_array_document(
    lake: Lake, ingest_file: Callable[..., Any], rows: Callable[..., list[dict[str, Any]]]
) -> None:
    doc = json.dumps([{"id": 1, "v": "x"}, {"id": 2, "v": "y"}, {"id": 3}])
    obj = ingest_file(lake, "j", "doc.json", doc)
    assert obj.state == COMMITTED, obj.error
    assert (obj.format, obj.rows_committed) == ("json", 3)
    assert rows(lake, "SELECT id, v FROM stage.j ORDER BY id") == [
        {"id": 1, "v": "x"},
        {"id": 2, "v": "y"},
        {"id": 3, "v": None},
    ]


def test_csv_options_delimiter_and_null_values(
    new_lake: Callable[..., Lake], ingest_file: Callable[..., Any], rows: Callable[..., list[dict[str, Any]]]
) -> None:
    lake = new_lake(
        [
            {
                "name": "semi",
                "format": "csv",
                "csv": {"delimiter": ";", "null_values": ["", "NA"]},
                "columns": [{"name": "id", "type": "long"}, {"name": "v", "type": "double"}],
            }
        ]
    )
    obj = ingest_file(lake, "semi", "s.txt", "id;v\n1;1.5\n2;NA\n3;\n")
    assert obj.state == COMMITTED, obj.error
    assert rows(lake, "SELECT id, v FROM stage.semi ORDER BY id") == [
        {"id": 1, "v": 1.5},
        {"id": 2, "v": None},
        {"id": 3, "v": None},
    ]


def test_headerless_csv_maps_columns_by_position(
    new_lake: Callable[..., Lake], ingest_file: Callable[..., Any], rows: Callable[..., list[dict[str, Any]]]
) -> None:
    lake = new_lake(
        [
            {
                "name": "nh",
                "format": "csv",
                "csv": {"header": False},
                "columns": [{"name": "id", "type": "long"}, {"name": "city", "type": "string"}],
            }
        ]
    )
    obj = ingest_file(lake, "nh", "nh.csv", "1,Oslo\n2,Bergen\n")
    assert obj.state == COMMITTED, obj.error
    assert rows(lake, "SELECT id, city, _tarn_row FROM stage.nh ORDER BY id") == [
        {"id": 1, "city": "Oslo", "_tarn_row": 1},
        {"id": 2, "city": "Bergen", "_tarn_row": 2},
    ]


@pytest.mark.parametrize(("dataset", "name"), [("a", "empty.csv"), ("j", "empty.jsonl")])
def test_empty_file_is_rejected_with_a_reason(
    lake: Lake, ingest_file: Callable[..., Any], dataset: str, name: str
) -> None:
    obj = ingest_file(lake, dataset, name, "")
    assert obj.state == REJECTED
    assert obj.error is not None and ("empty" in obj.error or "no columns" in obj.error)
    assert lake.tables() == []


def test_detection_helpers(tmp_path: Path) -> None:
    gz = tmp_path / "x.bin"
    gz.write_bytes(gzip.compress(b'{"a": 1}\n'))
    zs = tmp_path / "y.bin"
    zs.write_bytes(zstandard.ZstdCompressor().compress(b"[1]"))
    plain = tmp_path / "z.bin"
    plain.write_text("a,b\n1,2\n")
    assert (compression_of(str(gz)), compression_of(str(zs)), compression_of(str(plain))) == ("gzip", "zstd", None)
    # The declared format wins; then the extension (compression suffix stripped); then content.
    assert detect_format(str(plain), "z.bin", "parquet") == "parquet"
    assert detect_format(str(plain), "data.tsv.gz", "auto") == "csv"
    assert detect_format(str(gz), "x.bin", "auto") == "jsonl"
    assert detect_format(str(zs), "y.bin", "auto") == "json"
    assert detect_format(str(plain), "z.bin", "auto") == "csv"
    assert normalize_columns(["Order ID", "order-id", "1st", "\ufeffName", ""]) == [
        "order_id",
        "order_id_2",
        "c_1st",
        "name",
        "column",
    ]


def test_partitioned_dataset(
    new_lake: Callable[..., Lake], ingest_file: Callable[..., Any], rows: Callable[..., list[dict[str, Any]]]
) -> None:
    from deltalake import DeltaTable

    lake = new_lake(
        [
            {
                "name": "daily",
                "columns": [{"name": "id", "type": "long"}, {"name": "day", "type": "date"}],
                "partition_by": ["day"],
            }
        ]
    )
    obj = ingest_file(lake, "daily", "d.csv", "id,day\n1,2024-01-01\n2,2024-01-02\n3,2024-01-01\n")
    assert obj.state == COMMITTED, obj.error
    assert DeltaTable(lake.storage.table_uri("stage", "daily")).metadata().partition_columns == ["day"]
    assert rows(lake, "SELECT day, count(*) AS n FROM stage.daily GROUP BY day ORDER BY day") == [
        {"day": dt.date(2024, 1, 1), "n": 2},
        {"day": dt.date(2024, 1, 2), "n": 1},
    ]
