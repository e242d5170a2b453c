"""The equivalence suite: every example and test pipeline — Tarn YAML (tests/spark/pipelines) and Arc jobs
(the shared examples and Tarn's own Arc jobs in tests/pipelines/arc_jobs) — runs on DuckDB and on Spark
(local[2]), and both leave identical results: the same Delta tables (schema, partitioning, rows in any order),
the same files, and the same step outcomes (states, row counts, typing errors, expectation and quarantine
counts, validation results, merge metrics).

The inline test pipelines the tests in tests/pipelines write (``project.pipeline(...)``) are covered there: the
``project`` fixture (tests/pipelines/conftest.py) runs each of those tests on DuckDB and on Spark (local[2]), with
the same assertions on the resulting tables and steps."""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import write_deltalake
from spark_equivalence import SPARK, Action, Run, compare, run_case

from tarn.config.engine import EngineSpec

HERE = Path(__file__).parent
PIPELINES = HERE / "pipelines"
ARC_JOBS = HERE.parent / "pipelines" / "arc_jobs"
ARC_DATA = ARC_JOBS / "data"
SHARED_EXAMPLES = Path("/work/shared/arc/examples")
EXAMPLES = SHARED_EXAMPLES if SHARED_EXAMPLES.is_dir() else ARC_JOBS / "examples"
DUCKDB = EngineSpec(name="duckdb")


@pytest.fixture(autouse=True)
def _no_etl_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in list(os.environ):
        if name.startswith("ETL_CONF_"):
            monkeypatch.delenv(name)
    yield


def check(tmp_path: Path, actions: list[Action], *, pipelines: Path | None = None) -> None:
    duck = run_case(tmp_path / "duckdb", DUCKDB, actions, pipelines)
    spark = run_case(tmp_path / "spark", SPARK, actions, pipelines)
    assert duck.results, "the case ran nothing"
    diffs = compare(duck, spark)
    assert not diffs, "\n".join(diffs)
    print(f"duckdb {duck.seconds:.1f}s, spark {spark.seconds:.1f}s")


# ------------------------------------------------------------------------------------------------ inputs
def _write(proj: Path, rel: str, text: str) -> None:
    path = proj / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _seed(proj: Path, table: str, data: dict[str, list[Any]], mode: str = "append") -> None:
    zone, name = table.split(".")
    write_deltalake(str(proj / "lake" / zone / name), pa.table(data), mode=mode)  # type: ignore[call-overload]


def orders_inputs(proj: Path) -> None:
    """Two CSV files with every kind of value typing must accept or refuse the same way on both engines."""
    head = "order_id,customer_id,amount,status,ordered_on,ordered_at,paid,weight"
    a = [head]
    for i in range(1, 121):
        amount = "n/a" if i % 25 == 0 else f"{i * 1.5:.2f}"
        status = ["placed", " shipped ", "-", ""][i % 4]
        day = f"2024-01-{1 + i % 28:02d}" if i % 31 else "2024-02-30"
        at = f"2024-01-{1 + i % 28:02d} {i % 24:02d}:{i % 60:02d}:00" if i % 17 else "yesterday"
        paid = ["true", "F", "yes", "0", "maybe"][i % 5]
        weight = ["1.5", "1e2", "inf", "abc", "  7 "][i % 5]
        a.append(f"{i},{i % 7},{amount},{status},{day},{at},{paid},{weight}")
    b = [head]
    tricky = [
        ("121", "+3", "1_000", "placed", "2024/01/05", "2024-01-05T10:00:00Z", "TRUE", "-0"),
        ("122", " 4 ", "1.005", "placed", "2024-1-5", "2024-01-05 10:00:00+02", "t", "NaN"),
        ("123", "0x10", "12345678901", "placed", "2024", "2024-01-05", "n", "1_5"),
        ("124", "1e3", ".5", "placed", "2024-01", "2024-01-05 10:00", "Y", "-Infinity"),
        ("125", "1.5", "-1.", "placed", " 2024-01-05 ", " 2024-01-05 10:00:00", "1", "1e400"),
        ("126", "99999999999", "1e3", "placed", "20240105", "2024-01-05 10:00:00.123456", "no", ""),
        ("", "1", "1", "placed", "2024-01-05", "2024-01-05 10:00:00", "true", "1"),
        ("x7", "2", "2", "placed", "2024-01-06", "2024-01-06 10:00:00", "false", "2"),
    ]
    b += [",".join(r) for r in tricky]
    _write(proj, "data/orders_a.csv", "\n".join(a) + "\n")
    _write(proj, "data/orders_b.csv", "\n".join(b) + "\n")
    _seed(proj, "stage.customers", {"id": list(range(7)), "name": [f"c{i}" for i in range(7)]})


def customers(day: str, rows: list[tuple[int, str, str]]) -> Any:
    def write(proj: Path) -> None:
        text = "id,name,state,day\n" + "".join(f"{i},{n},{s},{day}\n" for i, n, s in rows)
        _write(proj, "data/customers.csv", text)

    return write


def format_inputs(proj: Path) -> None:
    orders_inputs(proj)
    _write(
        proj, "data/events/2024/a.jsonl", '{"id": 1, "kind": "a", "v": 1.5, "tags": ["x"]}\n{"id": 2, "kind": null}\n'
    )
    _write(proj, "data/events/2025/b.jsonl", '{"id": 3, "kind": "c", "v": 2, "nested": {"k": 1}}\n')
    _write(proj, "data/doc.json", '[{"b": 1, "a": "x"}, {"b": 2, "a": "y", "c": true}]')
    (proj / "data" / "facts").mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"k": [1, 2], "when": [dt.date(2024, 1, 1), None]}), proj / "data/facts/a.parquet")
    pq.write_table(pa.table({"k": [3], "when": [dt.date(2024, 1, 3)]}), proj / "data/facts/b.parquet")
    _write(proj, "data/notes.txt", "first line\nsecond, with a comma\n\nlast\n")
    _seed(proj, "stage.customers", {"id": [7], "name": ["c7"]})  # version 1: the extract reads version 0


def misc_inputs(proj: Path) -> None:
    _seed(proj, "analytics.people", {"id": [1, 8], "name": ["old", "eight"]})
    _seed(proj, "analytics.nums", {"id": [0, 100], "kind": ["fizz", "other"], "half": [0.0, 150.0]})


# --------------------------------------------------------------------------------------------- Tarn YAML
def test_orders_typing_expectations_join_merge(spark: Any, tmp_path: Path) -> None:
    check(tmp_path, [orders_inputs, Run("orders"), Run("orders")], pipelines=PIPELINES)


def test_scd2_with_effective_time_and_close_missing(spark: Any, tmp_path: Path) -> None:
    first = [(i, f"n{i}", "CA") for i in range(1, 41)]
    second = [(i, f"n{i}", "TX" if i <= 8 else "CA") for i in range(1, 36)] + [(41, "n41", "NY")]
    check(
        tmp_path,
        [
            customers("2024-01-01", first),
            Run("customers_scd2"),
            customers("2024-02-01", second),
            Run("customers_scd2"),
            Run("customers_scd2"),
        ],
        pipelines=PIPELINES,
    )


def test_misc_stages_in_spark_dialect(spark: Any, tmp_path: Path) -> None:
    check(tmp_path, [misc_inputs, Run("misc")], pipelines=PIPELINES)


def test_every_file_format(spark: Any, tmp_path: Path) -> None:
    check(tmp_path, [format_inputs, Run("formats")], pipelines=PIPELINES)


# ---------------------------------------------------------------------------------------------- Arc jobs
def _example_vars(changed: str = "32") -> dict[str, str]:
    return {
        "ETL_CONF_DATA_URL": str(EXAMPLES / "data"),
        "ETL_CONF_JOB_URL": str(EXAMPLES),
        "ETL_CONF_LAKE_URL": "{root}/out",
        "ETL_CONF_CHANGED": changed,
    }


def test_arc_example_orders_job(spark: Any, tmp_path: Path) -> None:
    check(tmp_path, [Run(str(EXAMPLES / "orders_job.conf"), env="test", variables=_example_vars())])


def test_arc_example_customers_scd2_notebook(spark: Any, tmp_path: Path) -> None:
    job = str(EXAMPLES / "customers_scd2.ipynb")
    check(
        tmp_path,
        [
            Run(job, env="test", variables=_example_vars()),
            Run(job, env="test", variables=_example_vars("31")),  # fails its final check: both undo the same
        ],
    )


def _extract_inputs(proj: Path) -> None:
    (proj / "facts").mkdir()
    pq.write_table(pa.table({"k": [1, 2, 3], "amount": [1.0, 2.0, 3.0]}), proj / "facts" / "a.parquet")
    pq.write_table(pa.table({"k": [4, 5, 6], "amount": [4.0, 5.0, 6.0]}), proj / "facts" / "b.parquet")
    versions = str(proj / "versions")
    write_deltalake(versions, pa.table({"n": [1]}))
    time.sleep(0.05)
    (proj / "between.txt").write_text(dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f"))
    time.sleep(0.05)
    write_deltalake(versions, pa.table({"n": [2]}), mode="append")
    write_deltalake(versions, pa.table({"n": [3]}), mode="append")


def test_arc_jobs_extracts(spark: Any, tmp_path: Path) -> None:
    """Every extract (files of each format, Delta with time travel) checked inside the job, on both engines."""

    # {between}: the time-travel timestamp, taken per project after its versions are written
    variables = {"ETL_CONF_DATA_URL": str(ARC_DATA), "ETL_CONF_TMP": "{root}", "ETL_CONF_TS": "{between}"}
    check(tmp_path, [_extract_inputs, Run(str(ARC_JOBS / "extracts.conf"), env="test", variables=variables)])


def test_arc_jobs_transforms(spark: Any, tmp_path: Path) -> None:
    variables = {"ETL_CONF_DATA_URL": str(ARC_DATA), "ETL_CONF_JOB_URL": str(ARC_JOBS), "ETL_CONF_SINCE": "2024-01-01"}
    check(tmp_path, [Run(str(ARC_JOBS / "transforms.conf"), variables=variables)])


def _seed_customers(proj: Path) -> None:
    write_deltalake(
        str(proj / "out" / "customers"),
        pa.table(
            {"id": [1, 2, 3, 4], "name": ["a", "b", "c", "d"], "active": [True] * 3 + [False], "deleted": [False] * 4}
        ),
    )


def test_arc_jobs_loads(spark: Any, tmp_path: Path) -> None:
    job = str(ARC_JOBS / "loads.conf")
    out = {"ETL_CONF_OUT": "{root}/out"}
    check(tmp_path, [_seed_customers, Run(job, env="test", variables=out), Run(job, env="gate", variables=out)])


def test_arc_jobs_save_modes(spark: Any, tmp_path: Path) -> None:
    job = str(ARC_JOBS / "save_modes.conf")

    def run(n: int, env: str) -> Run:
        return Run(job, env=env, variables={"ETL_CONF_OUT": "{root}/out", "ETL_CONF_RUN": str(n)})

    check(tmp_path, [run(1, "strict"), run(2, "strict"), run(3, "lenient")])


def test_arc_jobs_magics_notebook(spark: Any, tmp_path: Path) -> None:
    variables = {"ETL_CONF_DATA_URL": str(ARC_DATA), "ETL_CONF_OUT": "{root}/out"}
    check(tmp_path, [Run(str(ARC_JOBS / "magics.ipynb"), env="test", variables=variables)])


# -------------------------------------------------------------------------------------- known differences
@pytest.mark.xfail(
    reason="decimal arithmetic keeps each engine's result precision: INT * DECIMAL(2,1) is DECIMAL(12,1) on DuckDB "
    "and DECIMAL(13,1) on Spark (Spark adds one digit to p1 + p2); cast the result to fix its type",
    strict=True,
)
def test_decimal_result_precision_differs(spark: Any, tmp_path: Path) -> None:
    def pipeline(proj: Path) -> None:
        _write(
            proj,
            "pipelines/dec.yaml",
            "name: dec\nstages:\n"
            "  - {type: sql, name: s, output: s, sql: 'SELECT id * 1.5 AS half FROM (VALUES (1), (2)) t(id)'}\n"
            "  - {type: load, name: save, input: s, table: analytics.dec}\n",
        )

    check(tmp_path, [pipeline, Run("dec")])
