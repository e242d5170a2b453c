"""Bulk loads on Spark: Spark writes the result's Parquet files into the table's folder and Tarn commits exactly
those files to the Delta log with add actions (one commit, the load's app-transaction token, statistics from
the footers) — no row passes through Tarn's process. Reruns with the same token add nothing and leave no
files behind; schema changes fall back to delta-rs' own (streamed) writer; files of a write that never
committed are found by ``tarn maintain``; DuckDB reads the tables as Spark wrote them."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable, write_deltalake
from spark_equivalence import SPARK, rows

from tarn.engines.duckdb_pipeline import DuckDBEngine
from tarn.engines.spark import SparkEngine
from tarn.lake import Lake
from tarn.orchestrator.maintenance import orphaned_files
from tarn.pipelines import loads as L
from tarn.pipelines.api import access
from tarn.pipelines.context import RunOptions
from tarn.pipelines.project import find_pipeline
from tarn.pipelines.runner import run_pipeline
from tarn.tables import delta, files

N = 1000
DATA_SQL = (
    "SELECT id, concat('name-', CAST(id AS STRING)) AS name, CAST(id AS DOUBLE) / 4 AS score, "
    "date_add(DATE'2024-01-01', CAST(id % 3 AS INT)) AS day, "
    "timestamp_micros(1704103200000000 + id * 1000001) AS at, "
    "CAST(timestamp_micros(1704103200000000 + id) AS TIMESTAMP_NTZ) AS local_at, "
    "CASE WHEN id % 10 = 0 THEN NULL ELSE id % 7 END AS maybe "
    "FROM range({start}, {stop})"
)


def _tag(token: str) -> L.CommitTag:
    return L.CommitTag(token, "r1", "p", "load")


def _on_disk(uri: str) -> set[str]:
    root = Path(uri)
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and "_delta_log" not in p.parts}


def _adds(uri: str) -> list[dict[str, Any]]:
    return list(pa.table(DeltaTable(uri).get_add_actions(flatten=True)).to_pylist())


def test_append_commits_the_files_spark_wrote_exactly_once(spark: Any, tmp_path: Path) -> None:
    uri = str(tmp_path / "events")
    target = L.Target(uri, uri)
    sp = SparkEngine(spark)
    try:
        first = L.write_table_files(
            sp, DATA_SQL.format(start=0, stop=N), target, mode="append", tag=_tag("tok-1"), partition_by=["day"]
        )
        assert first is not None and first.rows_written == N and first.version == 0
        assert first.metrics["written_by"] == "spark" and first.metrics["num_added_files"] >= 3
        table = DeltaTable(uri)
        assert table.transaction_version("tok-1") == 1
        commit = table.history(1)[0]
        assert commit["tarn.token"] == "tok-1" and commit["tarn.writer"] == "spark"
        assert commit["operationMetrics"]["num_added_rows"] == N
        assert list(table.metadata().partition_columns) == ["day"]
        # The files are Spark's (parquet-mr), under the write's own prefix, in Delta's partition folders.
        adds = _adds(uri)
        for a in adds:
            assert a["path"].startswith(files.PREFIX) and f"/day={a['partition.day']}/" in a["path"]
            footer = pq.read_metadata(Path(uri) / a["path"])
            assert "parquet-mr" in str(footer.created_by)
            assert footer.schema.to_arrow_schema().field("at").type == pa.timestamp("us", tz="UTC")
        # The log's counts and statistics are the files' own.
        assert table.count() == N == sum(a["num_records"] for a in adds)
        for a in adds:
            data = pq.read_table(Path(uri) / a["path"])
            assert a["num_records"] == data.num_rows
            assert a["min.id"] == pa.compute.min(data["id"]).as_py()
            assert a["max.id"] == pa.compute.max(data["id"]).as_py()
            assert a["max.at"] == pa.compute.max(data["at"]).as_py()
            assert a["min.local_at"] == pa.compute.min(data["local_at"]).as_py()
            assert a["null_count.maybe"] == data["maybe"].null_count
            assert a["min.name"] == pa.compute.min(data["name"]).as_py()
        kept = _on_disk(uri)
        assert kept == {a["path"] for a in adds}  # no _SUCCESS, no .crc files

        # The same token again: nothing is added, the files of the rerun are gone.
        again = L.write_table_files(
            sp, DATA_SQL.format(start=0, stop=N), target, mode="append", tag=_tag("tok-1"), partition_by=["day"]
        )
        assert again is not None and again.already_committed and again.rows_written == N
        assert DeltaTable(uri).version() == 0 and _on_disk(uri) == kept

        # A second append (the table's partitioning, by default), and a filter DuckDB skips files with.
        more = L.write_table_files(sp, DATA_SQL.format(start=N, stop=N + 10), target, mode="append", tag=_tag("tok-2"))
        assert more is not None and more.version == 1 and DeltaTable(uri).count() == N + 10
        expected = rows(sp.query(f"SELECT * FROM ({DATA_SQL.format(start=0, stop=N + 10)}) WHERE id >= 995"))
    finally:
        sp.close()
    duck = DuckDBEngine()
    try:
        duck.register_dataset("stage.events", delta.query_dataset(DeltaTable(uri)))
        assert rows(duck.query("SELECT * FROM stage.events WHERE id >= 995")) == expected
        assert duck.query("SELECT count(*) AS n FROM stage.events").column(0)[0].as_py() == N + 10
    finally:
        duck.close()


def test_overwrite_replaces_the_files_and_schema_changes_stream(spark: Any, tmp_path: Path) -> None:
    uri = str(tmp_path / "t")
    write_deltalake(uri, pa.table({"id": pa.array([1, 2], pa.int64()), "kind": ["a", "b"]}))
    target = L.Target(uri, uri)
    sp = SparkEngine(spark)
    try:
        sql = "SELECT id, CASE WHEN id % 2 = 0 THEN 'even' ELSE 'odd' END AS kind FROM range(5)"
        out = L.write_table_files(sp, sql, target, mode="overwrite", tag=_tag("ow"))
        assert out is not None and out.version == 1 and out.rows_written == 5
        table = DeltaTable(uri)
        assert sorted(r["id"] for r in table.to_pyarrow_table().to_pylist()) == [0, 1, 2, 3, 4]
        assert all(a["path"].startswith(files.PREFIX) for a in _adds(uri))
        assert table.history(1)[0]["operationParameters"]["mode"] == "Overwrite"
        # A new column, another type, a different partitioning: delta-rs' writer evolves the table (None here).
        before = _on_disk(uri)
        for sql, parts in [
            ("SELECT id, 'x' AS kind, 1 AS extra FROM range(3)", ()),
            ("SELECT CAST(id AS INT) AS id, 'x' AS kind FROM range(3)", ()),
            ("SELECT id, 'x' AS kind FROM range(3)", ("kind",)),
        ]:
            assert L.write_table_files(sp, sql, target, mode="append", tag=_tag("ev"), partition_by=parts) is None
        assert L.write_table_files(sp, sql, target, mode="replace_where", tag=_tag("rw")) is None
        assert _on_disk(uri) == before and DeltaTable(uri).version() == 1
    finally:
        sp.close()


def test_files_of_a_write_that_never_committed_are_orphans(spark: Any, tmp_path: Path) -> None:
    """A run killed between Spark's write and the commit leaves files no version references: maintenance's
    orphan sweep lists them (a prefix that does not start with '_' or '.', so vacuum sees it)."""
    uri = str(tmp_path / "t")
    write_deltalake(uri, pa.table({"id": pa.array([1], pa.int64())}))
    sp = SparkEngine(spark)
    try:
        prefix = files.new_prefix()
        sp.write_table_files("SELECT id FROM range(10)", uri, prefix, [])
    finally:
        sp.close()
    orphans = orphaned_files(uri, 0)
    assert orphans and all(o.startswith(prefix + "/") for o in orphans)
    assert any(o.endswith(".parquet") for o in orphans)
    assert DeltaTable(uri).count() == 1


def test_commit_files_refuses_a_table_that_changed(spark: Any, tmp_path: Path) -> None:
    uri = str(tmp_path / "t")
    write_deltalake(uri, pa.table({"id": pa.array([1], pa.int64())}))
    sp = SparkEngine(spark)
    try:
        prefix = files.new_prefix()
        sp.write_table_files("SELECT id, 'a' AS other FROM range(3)", uri, prefix, [])
    finally:
        sp.close()
    schema = pa.schema([("id", pa.int64()), ("other", pa.string())])
    written = files.describe(uri, prefix, schema, [])
    with pytest.raises(Exception, match="columns differ"):
        delta.commit_files(uri, written, token="t", mode="append", schema=schema, prefix=prefix)
    assert DeltaTable(uri).version() == 0
    assert [f["name"] for f in json.loads(DeltaTable(uri).schema().to_json())["fields"]] == ["id"]


def test_pipeline_loads_on_spark_are_bulk(spark: Any, tmp_path: Path) -> None:
    proj = tmp_path / "proj"
    (proj / "pipelines").mkdir(parents=True)
    (proj / "tarn.yaml").write_text("name: bulk\nlake: {root: lake}\ndatasets: []\n")
    (proj / "pipelines" / "nums.yaml").write_text(
        "name: nums\ndialect: spark\nstages:\n"
        "  - {type: sql, name: n, output: n, sql: 'SELECT id, id % 4 AS bucket FROM range(50)'}\n"
        "  - {type: load, name: all, input: n, table: analytics.nums, mode: append, partition_by: [bucket]}\n"
        "  - {type: load, name: snap, input: n, table: analytics.snap, mode: overwrite}\n"
    )
    lake = Lake(proj)
    try:
        acc = dataclasses.replace(access(lake), engine=SPARK)
        spec = find_pipeline(proj, "nums")
        result = run_pipeline(acc, spec, RunOptions())
        assert result.ok, result.error
        loads = [s for s in result.steps if s["type"] == "load"]
        assert [s["rows_out"] for s in loads] == [50, 50]
        assert all(s["detail"]["metrics"]["written_by"] == "spark" for s in loads)
        uri = str(proj / "lake" / "analytics" / "nums")
        assert DeltaTable(uri).count() == 50
        assert DeltaTable(uri).transaction_version(L.run_token(result.run_id, "all")) == 1
    finally:
        lake.close()


def test_spark_reads_partitioned_tables_mixing_writers(spark: Any, tmp_path: Path) -> None:
    """Partition folders under the table's root (delta-rs) and under several bulk writes' prefixes: Spark's
    reader (one partition root per read) and DuckDB see the same rows."""
    uri = str(tmp_path / "t")
    first = pa.table({"id": pa.array([100], pa.int64()), "b": pa.array([1], pa.int64())})
    write_deltalake(uri, first, partition_by=["b"])
    sp, duck = SparkEngine(spark), DuckDBEngine()
    try:
        for token in ("a", "b"):
            sql = "SELECT id, id % 2 AS b FROM range(4)"
            assert L.write_table_files(sp, sql, L.Target(uri, uri), mode="append", tag=_tag(token)) is not None
        assert len({a["path"].split("/")[0] for a in _adds(uri)}) == 3
        sp.register_delta("stage.t", DeltaTable(uri))
        duck.register_delta("stage.t", DeltaTable(uri))
        got = [rows(e.query("SELECT * FROM stage.t")) for e in (sp, duck)]
        assert got[0] == got[1] and len(got[0]) == 9
    finally:
        sp.close()
        duck.close()
