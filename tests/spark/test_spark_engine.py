"""The Spark engine on its own: typing gives DuckDB's values and errors for a corpus of awkward inputs, Delta
versions are read from their Parquet files (empty tables, evolved schemas, partitions, time travel), runs get
separate sessions on one SparkContext, and the configuration and validation around it."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake
from spark_equivalence import rows

from tarn.config.engine import EngineSpec
from tarn.config.spec import ProjectSpec
from tarn.engines import spark_session
from tarn.engines.base import TypedField
from tarn.engines.duckdb_pipeline import DuckDBEngine
from tarn.engines.spark import SparkEngine
from tarn.errors import MissingExtraError, QueryError
from tarn.pipelines.context import LakeAccess
from tarn.pipelines.runner import engine_name
from tarn.pipelines.spec import PipelineSpec
from tarn.pipelines.validate import validate_project

CORPUS = [
    "1", " 1 ", "+1", "-1", "1.0", "1.5", "1e3", "15e-1", "1_000", "1__0", "0x10", "", " ", "01", "abc", "1,5",
    "9223372036854775808", "99999999999", ".5", "1.", "inf", "-Infinity", "NaN", "1e400", "1.005", "12345678901",
    "2024-01-05", "2024-1-5", "2024", "2024-01", "2024/01/05", " 2024-01-05 ", "2024-01-05 ", "20240105",
    "2024-02-30", "2024-01-05 10:00:00", "2024-01-05T10:00:00Z", "2024-01-05 10:00:00+02", "2024-01-05 10:00",
    "2024-01-05 10:00:00.123456", " 2024-01-05 10:00:00", "2024-01-05 10:00:00 ", "yesterday",
    "true", "TRUE", "t", "yes", "Y", "0", "no", "F", "maybe", None,
]  # fmt: skip
TYPES = ["long", "integer", "short", "double", "float", "decimal(10,2)", "date", "timestamp", "boolean", "string"]


# DuckDB reads these as its special dates ±infinity (which Arrow cannot even hand to Python); Spark has none:
# they are typing errors there. A documented difference.
INFINITE = ("inf", "-Infinity")


def _typed(engine: Any, fields: list[TypedField]) -> list[str]:
    values = [v for v in CORPUS if not (fields[0].type in ("date", "timestamp") and v in INFINITE)]
    engine.register_dataset("raw", pa.table({f.name: pa.array(values, pa.string()) for f in fields}))
    return rows(engine.query(engine.typing_sql("raw", fields, by_position=False)))


@pytest.mark.parametrize("type_name", TYPES)
def test_typing_matches_duckdb_value_for_value(spark: Any, type_name: str) -> None:
    fields = [
        TypedField(name="plain", type=type_name),
        TypedField(name="strict", type=type_name, nullable=False, trim=True, null_values=("", "abc")),
    ]
    duck, sp = DuckDBEngine(), SparkEngine(spark)
    try:
        assert _typed(sp, fields) == _typed(duck, fields)
    finally:
        duck.close()
        sp.close()


def test_typing_with_formats_true_values_and_replacements(spark: Any) -> None:
    fields = [
        TypedField(name="d", type="date", formats=("%d/%m/%Y", "%Y%m%d")),
        TypedField(name="ts", type="timestamp", formats=("%d/%m/%Y %H:%M:%S",), timezone="Europe/Paris"),
        TypedField(name="b", type="boolean", true_values=("Y", "yes"), false_values=("N",)),
        TypedField(name="n", type="long", null_replacement="-1"),
    ]
    values = ["05/01/2024", "20240105", "05/01/2024 10:30:00", "Y", "N", "yes", "x", None, "7"]
    duck, sp = DuckDBEngine(), SparkEngine(spark)
    try:
        out = []
        for engine in (duck, sp):
            engine.register_dataset("raw", pa.table({f.name: pa.array(values, pa.string()) for f in fields}))
            out.append(rows(engine.query(engine.typing_sql("raw", fields, by_position=False))))
        assert out[0] == out[1]
    finally:
        duck.close()
        sp.close()


def test_time_columns_are_a_clear_error_on_spark(spark: Any) -> None:
    sp = SparkEngine(spark)
    try:
        sp.register_dataset("raw", pa.table({"t": ["10:00:00"]}))
        with pytest.raises(QueryError, match="no TIME type"):
            sp.typing_sql("raw", [TypedField(name="t", type="time")], by_position=False)
    finally:
        sp.close()


def test_delta_versions_read_from_parquet_files(spark: Any, tmp_path: Path) -> None:
    """Empty table, evolved schema (old files lack a column: NULL), partitions, and an older version."""
    uri = str(tmp_path / "t")
    write_deltalake(uri, pa.table({"id": pa.array([], pa.int64()), "p": pa.array([], pa.string())}), partition_by=["p"])
    write_deltalake(uri, pa.table({"id": [1, 2], "p": ["a", "b"]}), mode="append")
    write_deltalake(uri, pa.table({"id": [3], "p": ["a"], "extra": [1.5]}), mode="append", schema_mode="merge")
    duck, sp = DuckDBEngine(), SparkEngine(spark)
    try:
        for version in (0, 1, 2):
            got = []
            for engine in (duck, sp):
                engine.register_delta("stage.t", DeltaTable(uri, version=version))
                table = engine.query("SELECT * FROM stage.t")
                got.append((table.column_names, rows(table)))
            assert got[0] == got[1], f"version {version}"
        assert len(got[1][1]) == 3 and got[1][0] == ["id", "p", "extra"]
    finally:
        duck.close()
        sp.close()


def test_runs_get_their_own_views_on_one_context(spark: Any) -> None:
    a, b = SparkEngine(spark), SparkEngine(spark)
    try:
        a.create_view("v", "SELECT 1 AS x")
        assert a.exists("v") and not b.exists("v")
        assert a.spark.sparkContext is b.spark.sparkContext
        assert spark_session.get_session("local[2]") is spark
        with pytest.raises(Exception, match="already runs a Spark session"):
            spark_session.get_session("local[3]")
    finally:
        a.close()
        b.close()


def test_missing_pyspark_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyspark.sql", None)
    with pytest.raises(MissingExtraError, match="pyspark") as e:
        spark_session.import_pyspark()
    assert e.value.hint == "pip install 'tarn[spark]'"


def test_engine_section_and_pipeline_override(tmp_path: Path) -> None:
    spec = ProjectSpec.model_validate({"engine": {"name": "spark", "master": "sc://spark:15002", "conf": {"a": 1}}})
    assert spec.engine == EngineSpec(name="spark", master="sc://spark:15002", conf={"a": "1"})
    assert ProjectSpec().engine.name == "duckdb"
    with pytest.raises(ValueError, match="not a Spark master URL"):
        EngineSpec(name="spark", master="localhost")
    lake = LakeAccess(tmp_path, lambda z, t: "", None, "p", engine=spec.engine)  # type: ignore[arg-type]
    stages = [{"type": "sql", "name": "s", "sql": "SELECT 1", "output": "o"}]
    assert engine_name(lake, PipelineSpec.model_validate({"name": "a", "stages": stages})) == "spark"
    pinned = PipelineSpec.model_validate({"name": "b", "engine": "duckdb", "stages": stages})
    assert engine_name(lake, pinned) == "duckdb"


def test_validate_names_the_stage_and_the_construct_that_cannot_be_transpiled(tmp_path: Path) -> None:
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "pipelines" / "top.yaml").write_text(
        "name: top\nstages:\n"
        "  - {type: sql, name: fine, sql: 'SELECT 1 AS a, 2 AS b', output: t}\n"
        "  - {type: sql, name: top two, sql: 'SELECT arg_max(a, b, 2) AS best FROM t', output: best}\n"
    )
    on_duckdb = validate_project(tmp_path, spec=ProjectSpec())
    assert [p for p in on_duckdb if "transpiled" in p.message] == []
    on_spark = validate_project(tmp_path, spec=ProjectSpec.model_validate({"engine": {"name": "spark"}}))
    problems = [p for p in on_spark if "transpiled" in p.message]
    assert len(problems) == 1 and problems[0].stage == "top two"
    assert "ArgMax" in problems[0].message and "cannot be transpiled to spark" in problems[0].message
